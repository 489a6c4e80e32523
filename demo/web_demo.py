"""Serve a web page (Gradio) that runs RAVLT detectors and segmentors on images.

    python demo/web_demo.py [MODEL ...] [--host 127.0.0.1] [--port 7860] [--device cpu]
        [--pred-score-thr 0.3] [--examples IMAGE_OR_DIR ...]

    python demo/web_demo.py mask-rcnn_ravlt-s_fpn_amp-1x_coco \
        upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512
    Q=configs/quickstart W=work_dirs/quickstart; python demo/web_demo.py \
        $Q/mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes.py:$W/maskrcnn/train/epoch_8.pth \
        $Q/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py:$W/fpn/train/iter_200.pth

Each MODEL is one entry of the page's model list:
    NAME                a model of the zoo (configs/metafile.yml): its config and the authors'
                        weights (downloaded on first use into the torch hub cache)
    NAME:CHECKPOINT     a zoo model's config with other weights
    CONFIG:CHECKPOINT   a detection (mmdet) or segmentation (mmseg) config and its checkpoint;
                        CONFIG may be an ``mmdet::`` / ``mmseg::`` name
CHECKPOINT is a file, an http(s) URL or a zoo name, ours or the authors' mmdet 2.x / mmseg 0.x
release (converted on load, by the loader of tools/test.py). Without MODEL the list holds every
zoo model that has trained weights. A model is built when it is first chosen and then kept.

On the page: choose a model, upload an image or click an example, set the score threshold. It
shows the predictions drawn by mmdet's or mmseg's visualizer, a table (detection and instance
segmentation: class, score and box x1 y1 x2 y2 in pixels of the image; semantic and panoptic
segmentation: each class's share of the image) and the time per image (the inferencer's
preprocessing, forward pass and postprocessing on DEVICE). The examples are shapes images of
tools/data's generators (what the quick-start models know), matplotlib's sample photo (for
COCO and ADE20K models) and the images of --examples.

The server binds 127.0.0.1 (this machine only) unless --host says otherwise, e.g. --host
0.0.0.0 for every interface. Past the zoo's weights (downloaded once; $RAVLT_ZOO_URL_ROOT
points at a mirror) it needs no network: Gradio's analytics and version check are off, and the
page loads its scripts, styles and fonts from this server only. Errors (a file that is not an
image, a model that fails to load) are shown on the page, and the server keeps serving.
"""
import argparse
import contextlib
import importlib
import io
import os
import os.path as osp
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# No usage reports and no version check over the network, in whatever Gradio builds (the page
# also says so itself: Blocks(analytics_enabled=False)).
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

from ravlt_dense import zoo  # noqa: E402
from ravlt_dense.checkpoint import find_checkpoint  # noqa: E402
from ravlt_dense.tools.images import IMG_EXTENSIONS, collect_images, read_image  # noqa: E402
from ravlt_dense.tools.inference import default_device  # noqa: E402
from ravlt_dense.tools.names import resolve_model  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA_TOOLS = osp.join(REPO, 'tools', 'data')
TITLE = 'RAVLT: detection and segmentation'
IMAGE_HEIGHT = 320  # px of the page's image boxes (smaller images are scaled up)
SEG_OPACITY = 0.5  # of the painted classes over the image, as demo/seg_demo.py's default
# Small images (the 128 px shapes) fill the image boxes instead of a corner of them.
CSS = '#image img, #result img {width: 100%; height: 100%; object-fit: contain;}'
TABLE_LABELS = {True: 'Instances above the threshold (box in pixels of the image)',
                False: 'Classes by share of the image'}


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the page's model list."""
    label: str  # as the page lists it
    config: str  # config file
    checkpoint: str  # file, URL or zoo name


def parse_model(spec: str) -> ModelChoice:
    """The model of a ``MODEL`` argument (see the module's docstring).

    Raises ValueError (unknown zoo name, config without checkpoint) or FileNotFoundError
    (missing config or checkpoint), naming the argument; a checkpoint that exists but does not
    fit the model is found when the model is built, and reported on the page.
    """
    if '.py:' in spec:
        head, _, checkpoint = spec.partition('.py:')
        name = head + '.py'
    elif '::' not in spec:  # zoo names hold no ':', mmdet:: / mmseg:: names hold '::'
        name, _, checkpoint = spec.partition(':')
    else:
        name, checkpoint = spec, ''
    if name.endswith('.py') or '::' in name or osp.isfile(name):
        if not checkpoint:
            raise ValueError(f'{spec}: give the checkpoint of a config as CONFIG:CHECKPOINT, '
                             f'e.g. {name}:work_dirs/{osp.splitext(osp.basename(name))[0]}/'
                             'epoch_12.pth')
    try:
        named = resolve_model(name, checkpoint or None)  # ValueError naming the zoo's models
    except FileNotFoundError:
        raise FileNotFoundError(f'{spec}: config not found: {name}') from None
    config, checkpoint = named.config, named.checkpoint()  # ValueError: no released weights
    label = name if named.from_zoo else osp.splitext(osp.basename(config))[0]
    if find_checkpoint(checkpoint) is None:
        raise FileNotFoundError(f'{spec}: checkpoint not found: {checkpoint} (a file, an '
                                'http(s) URL or a model of the zoo)')
    return ModelChoice(label, config, checkpoint)


def unique_labels(choices: Sequence[ModelChoice]) -> List[ModelChoice]:
    """The choices, a label seen before followed by its checkpoint's name (one config with two
    checkpoints: ``fpn_ravlt-t_1xb8-200it_ade-shapes-64x64``,
    ``fpn_ravlt-t_1xb8-200it_ade-shapes-64x64 (iter_80)``)."""
    taken, unique = set(), []
    for choice in choices:
        label, n = choice.label, 1
        if label in taken:
            label = f'{label} ({osp.splitext(osp.basename(choice.checkpoint))[0]})'
        while label in taken:
            label, n = f'{choice.label} #{n + 1}', n + 1
        taken.add(label)
        unique.append(ModelChoice(label, choice.config, choice.checkpoint))
    return unique


def check_port(host: str, port: int) -> None:
    """ValueError when ``host``:``port`` cannot be bound (in use, or not an address here), so
    that the server fails before it loads anything and says which option to change."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise ValueError(f'--host {host}: not an address of this machine ({err})')
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: a port left in TIME_WAIT by an earlier server counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ValueError(f'cannot serve on {host}:{port}: {err.strerror}; the port is '
                             'probably in use: pass a free one with --port')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='MODEL: NAME (zoo), NAME:CHECKPOINT or CONFIG:CHECKPOINT; see the top of '
        'demo/web_demo.py')
    parser.add_argument('models', nargs='*', metavar='MODEL',
                        help='models the page offers (default: every zoo model with weights)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to serve on (default: 127.0.0.1, this machine only)')
    parser.add_argument('--port', type=int, default=7860, help='port to serve on')
    parser.add_argument('--device', default=None,
                        help="'cpu' or a GPU such as 'cuda:0' (default: cuda:0 if available)")
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='initial score threshold of the page (instances above it are '
                        'drawn and listed)')
    parser.add_argument('--examples', nargs='+', default=[], metavar='IMAGE_OR_DIR',
                        help='more example images (files, or folders of images)')
    args = parser.parse_args(argv)
    if not 0 <= args.pred_score_thr <= 1:
        parser.error(f'--pred-score-thr must be in [0, 1], got {args.pred_score_thr}')
    if not 0 < args.port < 65536:
        parser.error(f'--port must be in 1..65535, got {args.port}')
    try:
        if args.models:
            args.choices = unique_labels([parse_model(spec) for spec in args.models])
        else:
            args.choices = [parse_model(name) for name in zoo.config_names()
                            if zoo.has_weights(name)]
        if not args.choices:
            raise ValueError('no model to serve: give MODEL (a zoo name or CONFIG:CHECKPOINT)')
        args.examples = collect_images(args.examples)
        check_port(args.host, args.port)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    args.device = args.device or default_device()
    return args


# ------------------------------------------------------------------------------------------
# Examples
# ------------------------------------------------------------------------------------------
def _data_script(name: str):
    """A generator of tools/data as a module (its folder on sys.path while it imports, as when
    it runs as a script)."""
    sys.path.insert(0, DATA_TOOLS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(DATA_TOOLS)


def write_examples(out_dir: str) -> List[str]:
    """Write the page's example images to ``out_dir`` and return their paths: two images of
    the COCO shapes set and one of the ADE shapes set (seed 0, validation split: images the
    quick starts are evaluated on, made by tools/data's generators) and matplotlib's sample
    photo (a person, for COCO and ADE20K models). The same files every time."""
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=out_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # the generators' progress lines
        _data_script('make_coco_shapes').make_coco_shapes(f'{work}/coco', 1, 7, seed=0)
        _data_script('make_ade_shapes').make_ade_shapes(f'{work}/ade', 1, 1, seed=0)
    sources = {  # validation images with three and four shapes, one with sky and ground
        'shapes_coco_val2.png': f'{work}/coco/val/000002.png',
        'shapes_coco_val6.png': f'{work}/coco/val/000006.png',
        'shapes_ade_val0.jpg': f'{work}/ade/images/validation/000000.jpg'}
    from matplotlib import cbook
    photo = cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    if osp.isfile(photo):
        sources['grace_hopper.jpg'] = photo
    examples = []
    for name, source in sources.items():
        examples.append(osp.join(out_dir, name))
        shutil.copyfile(source, examples[-1])
    shutil.rmtree(work)
    return examples


# ------------------------------------------------------------------------------------------
# Models and predictions
# ------------------------------------------------------------------------------------------
def build_inferencer(choice: ModelChoice, device: str):
    """mmdet's or mmseg's inferencer (by the config's ``default_scope``) of ``choice``, with
    the project's weights loading (:mod:`ravlt_dense.apis`)."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(choice.config)
    if cfg.get('custom_imports'):  # mmseg's inferencer does not read them
        import_modules_from_strings(**cfg.custom_imports)
    cfg.visualizer.vis_backends = None  # the page shows the drawings: no files written
    # every weight comes from the checkpoint: no backbone initialisation (a download)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    if cfg.get('default_scope') == 'mmseg':
        from ravlt_dense.apis import RAVLTSegInferencer
        inferencer = RAVLTSegInferencer(model=cfg, weights=choice.checkpoint, device=device)
        inferencer.visualizer.alpha = SEG_OPACITY
    else:
        from ravlt_dense.apis import RAVLTDetInferencer
        inferencer = RAVLTDetInferencer(model=cfg, weights=choice.checkpoint, device=device)
    inferencer.show_progress = False
    return inferencer


def task_of(sample) -> str:
    """What a model's prediction holds, in words."""
    if 'pred_panoptic_seg' in sample:
        return 'panoptic segmentation'
    if 'pred_sem_seg' in sample:
        return 'semantic segmentation'
    if 'masks' in sample.pred_instances:
        return 'instance segmentation'
    return 'object detection'


def instance_rows(sample, classes: Sequence[str], score_thr: float) -> List[list]:
    """[class, score, x1, y1, x2, y2] of each instance scoring above ``score_thr`` (those
    mmdet's visualizer draws), highest score first."""
    instances = sample.pred_instances.cpu()
    keep = instances.scores > score_thr
    rows = []
    for label, score, box in zip(instances.labels[keep].tolist(), instances.scores[keep].tolist(),
                                 instances.bboxes[keep].tolist()):
        name = classes[label] if label < len(classes) else str(label)
        rows.append([name, round(score, 3), *(round(v, 1) for v in box)])
    return sorted(rows, key=lambda row: -row[1])


def class_share_rows(label_map: np.ndarray, classes: Sequence[str]) -> List[list]:
    """[class, share of the image in %] of each class in a map of class indices (others, such
    as panoptic's VOID, are left out), largest first."""
    counts = np.bincount(label_map.ravel(), minlength=len(classes))[:len(classes)]
    rows = [[classes[i], round(100 * float(counts[i]) / label_map.size, 2)]
            for i in np.flatnonzero(counts)]
    return sorted(rows, key=lambda row: -row[1])


def table_of(sample, classes: Sequence[str], score_thr: float) -> Tuple[List[str], List[list]]:
    """The page's table of a prediction: headers and rows."""
    if 'pred_panoptic_seg' in sample:
        from mmdet.evaluation import INSTANCE_OFFSET
        ids = sample.pred_panoptic_seg.sem_seg[0].cpu().numpy()
        return ['class', 'share of image (%)'], class_share_rows(ids % INSTANCE_OFFSET, classes)
    if 'pred_sem_seg' in sample:
        labels = sample.pred_sem_seg.data[0].cpu().numpy()
        return ['class', 'share of image (%)'], class_share_rows(labels, classes)
    return (['class', 'score', 'x1', 'y1', 'x2', 'y2'],
            instance_rows(sample, classes, score_thr))


def drawable(sample, num_classes: int):
    """``sample`` as mmdet's visualizer can draw it: a panoptic prediction with no segment
    (every pixel VOID, which is ``num_classes``) fails there, so it is left out."""
    if 'pred_panoptic_seg' in sample and not (sample.pred_panoptic_seg.sem_seg
                                              != num_classes).any():
        sample = sample.clone()
        del sample.pred_panoptic_seg
    return sample


class Predictor:
    """The page's models, each built on first use and kept, and what it does with an image.

    Args:
        choices (Sequence[ModelChoice]): The models the page offers.
        device (str): Where the models run.
    """

    def __init__(self, choices: Sequence[ModelChoice], device: str):
        self.choices = {choice.label: choice for choice in choices}
        self.device = device
        self._models: Dict[str, object] = {}
        self._lock = threading.Lock()  # one build at a time, each model built once

    def model(self, label: str) -> Tuple[object, Optional[float]]:
        """The inferencer of ``label`` and the seconds its build took (None when it was
        built before). Raises RuntimeError naming the model when it cannot be built."""
        with self._lock:
            if label in self._models:
                return self._models[label], None
            if label not in self.choices:
                raise RuntimeError(f'unknown model {label!r}: choose one of the list')
            start = time.perf_counter()
            try:
                self._models[label] = build_inferencer(self.choices[label], self.device)
            except Exception as err:  # any failure of mmengine/mmdet/mmseg, shown to the user
                choice = self.choices[label]
                raise RuntimeError(f'{label} could not be loaded ({choice.config}, '
                                   f'{choice.checkpoint}): {type(err).__name__}: {err}') from err
            return self._models[label], time.perf_counter() - start

    def __call__(self, img: np.ndarray, label: str, score_thr: float) -> dict:
        """Predictions of the model ``label`` on ``img`` (BGR): ``vis`` (RGB drawing),
        ``headers``, ``rows``, ``task``, ``seconds`` (inference) and ``built`` (seconds the
        model's build took, or None)."""
        inferencer, built = self.model(label)
        start = time.perf_counter()
        out = inferencer(img, return_datasamples=True)
        seconds = time.perf_counter() - start
        # mmdet's inferencer returns {'predictions': [...]}, mmseg's the one sample itself
        sample = out['predictions'][0] if isinstance(out, dict) else out
        classes = list(inferencer.model.dataset_meta.get('classes') or ())
        headers, rows = table_of(sample, classes, score_thr)
        visualizer = inferencer.visualizer
        options = dict(with_labels=True) if 'pred_sem_seg' in sample else dict(
            pred_score_thr=score_thr)
        visualizer.add_datasample('page', img[:, :, ::-1].copy(), drawable(sample, len(classes)),
                                  draw_gt=False, show=False, **options)
        return dict(vis=visualizer.get_image(), headers=headers, rows=rows,
                    task=task_of(sample), seconds=seconds, built=built)


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------
def summary(label: str, result: dict, score_thr: float, device: str) -> str:
    """The line under the table: task, count, time per image."""
    if result['headers'][1] == 'score':
        found = f'{len(result["rows"])} instance(s) with score > {score_thr:.2f}'
    else:
        found = f'{len(result["rows"])} class(es) present'
    text = (f'**{label}** ({result["task"]}): {found}. '
            f'Time per image: **{result["seconds"]:.3f} s** on {device}')
    if result['built'] is not None:
        text += f' (model built in {result["built"]:.1f} s on first use)'
    return text + '.'


def build_page(predictor: Predictor, examples: Sequence[str], score_thr: float):
    """The Gradio Blocks of the page."""
    import gradio as gr
    import pandas as pd

    labels = list(predictor.choices)

    def run(image: Optional[dict], label: str, thr: float):
        # ``image`` is Gradio's upload record (preprocess=False): the file is read here, so
        # that a file which is not an image gets a message of ours.
        if image is None:
            return None, None, 'Upload an image or click an example.'
        name = image.get('orig_name') or osp.basename(image['path'])
        try:
            img = read_image(image['path'])
        except ValueError:
            raise gr.Error(f'{name} is not an image that can be read: upload an image file '
                           f'({", ".join(e[1:] for e in IMG_EXTENSIONS)}).', duration=None)
        try:
            result = predictor(img, label, float(thr))
        except RuntimeError as err:
            raise gr.Error(str(err), duration=None)
        instances = result['headers'][1] == 'score'
        table = gr.Dataframe(pd.DataFrame(result['rows'], columns=result['headers']),
                             label=TABLE_LABELS[instances])
        return result['vis'], table, summary(label, result, float(thr), predictor.device)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        gr.Markdown(f'## {TITLE}\nChoose a model, upload an image or click an example; the '
                    'score threshold applies to detections and instances.')
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(labels, value=labels[0], label='Model', elem_id='model')
                image = gr.Image(type='filepath', sources=['upload'], label='Image',
                                 height=IMAGE_HEIGHT, elem_id='image')
                if examples:
                    gr.Examples([[path] for path in examples], inputs=[image],
                                label='Examples', examples_per_page=12, elem_id='examples')
                thr = gr.Slider(0, 1, value=score_thr, step=0.01, label='Score threshold',
                                elem_id='score-thr')
                button = gr.Button('Run', variant='primary', elem_id='run')
            with gr.Column():
                result = gr.Image(label='Predictions', format='png', interactive=False,
                                  height=IMAGE_HEIGHT, elem_id='result')
                info = gr.Markdown(elem_id='summary')
                table = gr.Dataframe(label=TABLE_LABELS[True], interactive=False,
                                     elem_id='table')
        # One model run at a time, whatever started it: the models share the device.
        event = dict(fn=run, inputs=[image, model, thr], outputs=[result, table, info],
                     preprocess=False, concurrency_id='model', concurrency_limit=1)
        image.change(**event)
        button.click(**event)
        model.change(**event)
        thr.release(**event)
    return page


def main(argv=None):
    args = parse_args(argv)
    predictor = Predictor(args.choices, args.device)
    # Gradio copies the examples into its own cache when it builds the page: the files
    # written here are not needed past that.
    with tempfile.TemporaryDirectory(prefix='ravlt_web_demo_') as example_dir:
        examples = write_examples(example_dir) + args.examples
        page = build_page(predictor, examples, args.pred_score_thr)
    print(f'web_demo: {len(predictor.choices)} model(s): {", ".join(predictor.choices)}; '
          f'{len(examples)} examples; device {args.device}', flush=True)
    # Gradio's default theme takes its fonts from Gradio's own files: nothing from outside.
    page.queue().launch(server_name=args.host, server_port=args.port, share=False,
                        inbrowser=False, show_error=True, css=CSS)


if __name__ == '__main__':
    main()
