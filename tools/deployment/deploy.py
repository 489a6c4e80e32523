"""Deploy a whole RAVLT detector or segmentor to ONNX Runtime or OpenVINO with mmdeploy, refuse
a model whose results differ from PyTorch's, and quantize it to int8 if asked.

    python tools/deployment/deploy.py CONFIG CHECKPOINT IMAGE [IMAGE ...]
        [--backend onnxruntime|openvino] [--dynamic] [--work-dir DIR] [--deploy-cfg FILE]
        [--calib-images DIR [--calib-num N]] [--benchmark]

CONFIG is a config file or a name of the model zoo (configs/metafile.yml); CHECKPOINT a file,
an http(s) URL or a zoo name, ours or the authors' release, loaded by the loader of
tools/test.py and the demos (converted on load, checked key by key). The model, with its
post-processing (NMS, masks, the segmentation logits), goes to WORK_DIR/end2end.onnx through
mmdeploy's export (mmdeploy.apis.onnx.export, as mmdeploy's own tools/deploy.py), with the
project's deploy configs (configs/deploy/: opset 17, static or ``--dynamic`` height and width).
Importing ravlt_dense.deploy.rewriters registers, in mmdeploy's rewriter registries, what
mmdeploy 1.3.1 needs with current torch, an exact adaptive average pooling (UperNet), sizes
that follow the input (Semantic FPN) and mmdet's own post-processing (docs/deployment.md).

``--backend openvino`` converts that graph (standard ONNX ops) with ``openvino.convert_model``
to WORK_DIR/end2end.xml / .bin, run by OpenVINO's runtime (ravlt_dense/deploy/openvino_backend.py;
DINO and Mask2Former, whose graphs hold mmdeploy's own ``grid_sampler`` op, are refused by name).

Then every IMAGE runs through PyTorch and the backend (the first image is the one exported;
with ``--dynamic`` give images of other sizes too), and the results are compared:
detections (labels, boxes, scores; masks for instance segmentation) or the segmentation logits
and their argmax. When they differ beyond the tolerances the model is deleted and the tool
exits with status 1, naming the difference.

``--calib-images DIR`` then quantizes the checked graph to int8 (ONNX Runtime's quantizer,
QDQ, calibrated on the first ``--calib-num`` images of DIR prepared as the test pipeline
prepares them; ravlt_dense/deploy/quantization.py) into WORK_DIR/end2end_int8.onnx (and
end2end_int8.xml for OpenVINO), and prints how its results on the first IMAGE differ from
PyTorch's (int8 differs by design: evaluate it with test_onnx.py --int8). ``--benchmark`` then
times PyTorch and the backend (and int8) on this machine. tools/deployment/test_onnx.py
evaluates the models on a data set (metrics as tools/test.py's).

Needs mmdeploy 1.3.1 installed without its dependencies (it declares protobuf<=3.20.2, which
the onnx it exports with excludes): ``make env`` does it, else
``pip install -e ".[deploy]" && pip install --no-deps mmdeploy==1.3.1`` (docs/deployment.md);
OpenVINO: ``pip install openvino``. TensorRT deploy configs are in configs/deploy/ but not run
here.
"""
import argparse
import copy
import math
import os
import os.path as osp
import statistics
import sys
import timeit

import numpy as np
import torch

from ravlt_dense.deploy import BACKEND_NAMES, require_backend, require_mmdeploy


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='detection or segmentation config, or a zoo name')
    parser.add_argument('checkpoint', help='weights: file, URL or zoo name')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image(s): the first is exported, all are compared')
    parser.add_argument('--backend', default='onnxruntime', choices=list(BACKEND_NAMES),
                        help='inference backend (TensorRT: see docs/deployment.md, not run '
                        'here)')
    parser.add_argument('--dynamic', action='store_true',
                        help='height and width dynamic in the exported graph')
    parser.add_argument('--work-dir', help='where end2end.onnx goes (default: '
                        'work_dirs/deploy/CONFIG[-dynamic])')
    parser.add_argument('--deploy-cfg', help='deploy config instead of the one of configs/deploy '
                        'for the task')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the model config')
    parser.add_argument('--score-tol', type=float, default=1e-3,
                        help='largest accepted score difference of matched detections')
    parser.add_argument('--box-tol', type=float, default=0.05,
                        help='largest accepted box coordinate difference (pixels)')
    parser.add_argument('--mask-tol', type=float, default=0.005,
                        help='largest accepted fraction of differing pixels in a matched mask')
    parser.add_argument('--logit-tol', type=float, default=1e-3,
                        help='largest accepted |onnx - torch| / max |torch| of the segmentation '
                        'logits')
    parser.add_argument('--argmax-tol', type=float, default=1e-3,
                        help='largest accepted fraction of pixels whose argmax differs')
    parser.add_argument('--calib-images', metavar='DIR',
                        help='quantize to int8 too, calibrated on images of this folder (like '
                        'those the model will see)')
    parser.add_argument('--calib-num', type=int, default=100, metavar='N',
                        help='calibration images: the first N of --calib-images (default 100)')
    parser.add_argument('--benchmark', action='store_true',
                        help='time PyTorch (eager) and the backend on the first image')
    parser.add_argument('--repeat', type=int, default=5, help='timed runs for --benchmark')
    args = parser.parse_args(argv)
    for image in args.images:
        if not osp.isfile(image):
            parser.error(f'image not found: {image}')
    args.calibration = None
    if args.calib_images is not None:
        from ravlt_dense.deploy.quantization import calibration_images
        try:
            args.calibration = calibration_images(args.calib_images, args.calib_num)
        except ValueError as err:
            parser.error(str(err))
    return args


def post_processing_of(model_cfg) -> dict:
    """mmdeploy's post-processing thresholds set to the model's own test_cfg, so that the graph
    keeps the detections PyTorch keeps (mmdeploy's two-stage rewriters read the RPN's and the
    RoI head's test_cfg themselves; max_output_boxes_per_class bounds their NMS too)."""
    test_cfg = model_cfg.model.get('test_cfg') or {}
    final = test_cfg.get('rcnn', test_cfg)
    if isinstance(final, (list, tuple)):
        final = final[-1]
    params = {}
    if 'score_thr' in final:
        params['score_threshold'] = final['score_thr']
    if 'nms' in final:
        params['iou_threshold'] = final['nms']['iou_threshold']
    if 'max_per_img' in final:
        params['keep_top_k'] = final['max_per_img']
    rpn = test_cfg.get('rpn') or {}
    params['max_output_boxes_per_class'] = max(
        rpn.get('max_per_img', 0), final.get('max_per_img', 0), 1000)
    if 'nms_pre' in final:
        params['pre_top_k'] = max(final['nms_pre'] * 5, 5000)
    return params


def load_configs(args):
    from mmengine.config import Config

    from ravlt_dense.deploy.configs import deploy_config_path, model_task
    from ravlt_dense.tools.cli import model_or_exit
    config = model_or_exit(args.config).config
    model_cfg = Config.fromfile(config)
    if args.cfg_options:
        model_cfg.merge_from_dict(args.cfg_options)
    try:
        task = model_task(model_cfg)
    except ValueError as error:
        raise SystemExit(f'{args.config}: {error}')
    if args.backend == 'openvino':
        from ravlt_dense.deploy.openvino_backend import refusal
        reason = refusal(model_cfg)
        if reason:
            raise SystemExit(f'{args.config}: {reason}')
    deploy_file = args.deploy_cfg or deploy_config_path(model_cfg, args.dynamic, args.backend)
    deploy_cfg = Config.fromfile(deploy_file)
    if deploy_cfg.backend_config.type != args.backend:
        raise SystemExit(f'{deploy_file} is for {deploy_cfg.backend_config.type}, not '
                         f'--backend {args.backend}: give a deploy config for {args.backend} '
                         '(configs/deploy/) or leave --deploy-cfg out')
    if task != 'Segmentation':
        deploy_cfg.codebase_config.post_processing.update(post_processing_of(model_cfg))
    return config, model_cfg, deploy_cfg, deploy_file, task


def export(task_processor, torch_model, deploy_cfg, image, work_dir) -> str:
    """WORK_DIR/end2end.onnx of ``torch_model`` through mmdeploy's export; returns its path.
    For OpenVINO the graph is ONNX Runtime's (:func:`ravlt_dense.deploy.configs.graph_config`).
    """
    from mmdeploy.apis.onnx import export as onnx_export
    from mmdeploy.utils import get_dynamic_axes, get_input_shape, get_onnx_config

    from ravlt_dense.deploy.configs import graph_config
    deploy_cfg = graph_config(deploy_cfg)
    onnx_cfg = get_onnx_config(deploy_cfg)
    data, inputs = task_processor.create_input(
        image, get_input_shape(deploy_cfg), data_preprocessor=torch_model.data_preprocessor)
    if isinstance(inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    names = onnx_cfg['input_names'] + onnx_cfg['output_names']
    prefix = osp.join(work_dir, osp.splitext(onnx_cfg['save_file'])[0])
    onnx_export(torch_model, inputs, prefix, backend=deploy_cfg.backend_config.type,
                input_metas=dict(data_samples=data['data_samples'], mode='predict'),
                context_info=dict(deploy_cfg=deploy_cfg),
                input_names=onnx_cfg['input_names'], output_names=onnx_cfg['output_names'],
                opset_version=onnx_cfg['opset_version'],
                dynamic_axes=get_dynamic_axes(deploy_cfg, names),
                keep_initializers_as_inputs=onnx_cfg['keep_initializers_as_inputs'],
                optimize=onnx_cfg.get('optimize', False))
    return prefix + '.onnx'


# --------------------------------------------------------------------------------------------
# comparing onnxruntime's results with PyTorch's
# --------------------------------------------------------------------------------------------
def compare_detections(expected, actual, tol) -> dict:
    """Match every PyTorch detection with an onnxruntime one of the same label whose box and
    score lie within the tolerances (masks: fraction of differing pixels). A detection may go
    unmatched only at the boundary of what is kept: its score within ``tol['score']`` of the
    lowest score kept (ties there may fall either way)."""
    def arrays(pred):
        out = dict(boxes=pred.bboxes.detach().cpu().numpy().astype(np.float64),
                   scores=pred.scores.detach().cpu().numpy().astype(np.float64),
                   labels=pred.labels.detach().cpu().numpy())
        if 'masks' in pred:
            out['masks'] = pred.masks.detach().cpu().numpy().astype(bool)
        return out
    e, a = arrays(expected), arrays(actual)
    worst = dict(box=0., score=0., mask=0., unmatched=0, torch=len(e['scores']),
                 onnx=len(a['scores']))
    used = np.zeros(len(a['scores']), bool)
    floor = min(e['scores'].min(initial=np.inf), a['scores'].min(initial=np.inf))
    for i in np.argsort(-e['scores'], kind='stable'):
        same = (~used) & (a['labels'] == e['labels'][i])
        cost = np.full(len(a['scores']), np.inf)
        if same.any():
            box = np.abs(a['boxes'][same] - e['boxes'][i]).max(1)
            cost[same] = np.maximum(box / tol['box'],
                                    np.abs(a['scores'][same] - e['scores'][i]) / tol['score'])
        j = int(np.argmin(cost)) if len(cost) else -1
        if j < 0 or cost[j] > 1:
            if e['scores'][i] - floor > tol['score']:
                worst['unmatched'] += 1
            continue
        used[j] = True
        worst['box'] = max(worst['box'], float(np.abs(a['boxes'][j] - e['boxes'][i]).max()))
        worst['score'] = max(worst['score'], float(abs(a['scores'][j] - e['scores'][i])))
        if 'masks' in e and 'masks' in a:
            worst['mask'] = max(worst['mask'], float((e['masks'][i] != a['masks'][j]).mean()))
    # onnxruntime's own extra detections count unless they too sit at the boundary
    worst['unmatched'] += int(((~used) & (a['scores'] - floor > tol['score'])).sum())
    worst['ok'] = worst['unmatched'] == 0 and worst['mask'] <= tol['mask']
    return worst


def describe_detections(r, backend='onnxruntime') -> str:
    return (f"{r['torch']} detections (PyTorch) vs {r['onnx']} ({backend}), unmatched "
            f"{r['unmatched']}, max box difference {r['box']:.3g} px, max score difference "
            f"{r['score']:.3g}, max mask pixel difference {r['mask']:.3g}")


def compare_logits(expected: torch.Tensor, actual: torch.Tensor, tol) -> dict:
    actual = torch.as_tensor(np.asarray(actual), dtype=expected.dtype)
    if actual.shape != expected.shape:
        return dict(ok=False, logit=float('inf'), argmax=1.,
                    shape=f'{tuple(actual.shape)} vs {tuple(expected.shape)}')
    logit = ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()
    argmax = (actual.argmax(1) != expected.argmax(1)).float().mean().item()
    return dict(ok=logit <= tol['logit'] and argmax <= tol['argmax'], logit=logit, argmax=argmax)


def describe_logits(r) -> str:
    if 'shape' in r:
        return f"logits of shape {r['shape']}"
    return (f"max logit difference {r['logit']:.3g} (relative to max |logit|), argmax differs "
            f"at {r['argmax'] * 100:.3g}% of pixels")


def segmentation_logits(torch_model, inputs, data_samples) -> torch.Tensor:
    """PyTorch's logits at the input's size: what the exported graph computes (mmdeploy's
    segmentor rewrite sets img_shape to the input's size)."""
    metas = []
    for sample in data_samples:
        meta = dict(sample.metainfo)
        meta['img_shape'] = tuple(inputs.shape[2:])
        metas.append(meta)
    with torch.no_grad():
        return torch_model.inference(inputs, metas)


def run_both(task, task_processor, torch_model, backend_model, image, deploy_cfg, tol):
    """(report, torch call, backend call) for one image."""
    from mmdeploy.utils import get_backend, get_input_shape
    data, inputs = task_processor.create_input(image, get_input_shape(deploy_cfg),
                                               data_preprocessor=torch_model.data_preprocessor)
    if task == 'Segmentation':
        def torch_call():
            return segmentation_logits(torch_model, inputs, data['data_samples'])

        def onnx_call():
            return backend_model.wrapper({'input': inputs})['output']
        report = compare_logits(torch_call(), onnx_call(), tol)
        report['text'] = describe_logits(report)
    else:
        raw = task_processor.create_input(image, get_input_shape(deploy_cfg))[0]

        def torch_call():
            # The graph clips boxes to the image it is given, padded to the size divisor (it
            # knows no other size); PyTorch clips them to the same region here, and pastes
            # masks on that region, cropped to the image after (see docs/deployment.md).
            with torch.no_grad():
                data = torch_model.data_preprocessor(copy.deepcopy(raw), False)
                pad_h, pad_w = data['inputs'].shape[2:]
                sizes = []
                for sample in data['data_samples']:
                    scale_w, scale_h = sample.metainfo.get('scale_factor', (1., 1.))[:2]
                    sizes.append(sample.metainfo['ori_shape'][:2])
                    sample.set_metainfo(dict(
                        img_shape=(pad_h, pad_w),
                        ori_shape=(math.ceil(pad_h / scale_h), math.ceil(pad_w / scale_w))))
                results = torch_model.predict(data['inputs'], data['data_samples'],
                                              rescale=True)
            for result, (height, width) in zip(results, sizes):
                if 'masks' in result.pred_instances:
                    result.pred_instances.masks = \
                        result.pred_instances.masks[:, :height, :width]
            return results

        def onnx_call():
            with torch.no_grad():
                return backend_model.test_step(copy.deepcopy(raw))
        expected, actual = torch_call(), onnx_call()
        report = compare_detections(expected[0].pred_instances, actual[0].pred_instances, tol)
        report['text'] = describe_detections(report, BACKEND_NAMES[get_backend(deploy_cfg).value])
    report['size'] = 'x'.join(str(int(s)) for s in inputs.shape[2:])
    return report, torch_call, onnx_call


def median_seconds(fn, repeat: int) -> float:
    fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))


# how far int8 results may be from PyTorch's and still count as the same detection (what
# deploy.py prints about the int8 model; no check)
INT8_TOLERANCES = dict(score=0.05, box=2., mask=0.05, logit=1., argmax=1.)


def backend_files(backend: str, onnx_file: str) -> list:
    """The files of the deployed model: the ONNX file, and OpenVINO's IR made from it."""
    if backend == 'openvino':
        stem = osp.splitext(onnx_file)[0]
        return [onnx_file, stem + '.xml', stem + '.bin']
    return [onnx_file]


def to_backend(backend: str, onnx_file: str) -> str:
    """The file the backend runs: the ONNX file itself, or its OpenVINO IR (.xml)."""
    if backend == 'openvino':
        from ravlt_dense.deploy.openvino_backend import onnx_to_openvino
        return onnx_to_openvino(onnx_file, osp.splitext(onnx_file)[0] + '.xml')
    return onnx_file


def describe_files(files) -> str:
    """'a.onnx (12.3 MB), a.xml (+ .bin, 12.3 MB)'."""
    described = []
    for path in files:
        stem, ext = osp.splitext(path)
        if ext == '.xml':
            size = osp.getsize(path) + osp.getsize(stem + '.bin')
            described.append(f'{path} (+ .bin, {size / 2**20:.1f} MB)')
        elif ext != '.bin':
            described.append(f'{path} ({osp.getsize(path) / 2**20:.1f} MB)')
    return ', '.join(described)


def quantize(args, task_processor, torch_model, onnx_file) -> str:
    """``onnx_file`` quantized to int8 next to it (``end2end_int8.onnx``), calibrated on
    ``args.calibration`` prepared as the test pipeline and the data preprocessor prepare them
    (a static graph's size is cropped or padded to); returns the backend's int8 file."""
    from ravlt_dense.deploy.evaluation import onnx_input_size
    from ravlt_dense.deploy.quantization import ImageCalibrationReader, quantize_int8

    def prepare(path):
        inputs = task_processor.create_input(
            path, None, data_preprocessor=torch_model.data_preprocessor)[1]
        return inputs[0] if isinstance(inputs, list) else inputs

    def progress(i, n, path):
        if i == 1 or i == n or i % 10 == 0:
            print(f'calibrating int8: image {i}/{n} ({path})', flush=True)
    images = args.calibration
    if len(images) < args.calib_num:
        print(f'{args.calib_images} has {len(images)} image(s), fewer than --calib-num '
              f'{args.calib_num}: calibrating on all of them')
    reader = ImageCalibrationReader(images, prepare, input_size=onnx_input_size(onnx_file),
                                    progress=progress)
    int8_onnx = osp.splitext(onnx_file)[0] + '_int8.onnx'
    try:
        quantize_int8(onnx_file, int8_onnx, reader)
        return to_backend(args.backend, int8_onnx)
    except Exception as err:
        for path in backend_files(args.backend, int8_onnx):
            if osp.exists(path):
                os.remove(path)
        raise SystemExit(f'int8 quantization failed: {type(err).__name__}: {err}. No int8 '
                         f'model was written; {onnx_file} (checked) is kept.')


def main(argv=None):
    args = parse_args(argv)
    require_mmdeploy()
    require_backend(args.backend)
    from mmdeploy.apis import build_task_processor

    from ravlt_dense.checkpoint import load_model_checkpoint, resolve_checkpoint
    config, model_cfg, deploy_cfg, deploy_file, task = load_configs(args)
    try:
        resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as err:
        raise SystemExit(str(err))
    work_dir = args.work_dir or osp.join(
        'work_dirs', 'deploy',
        osp.splitext(osp.basename(config))[0] + ('-dynamic' if args.dynamic else ''))
    os.makedirs(work_dir, exist_ok=True)
    name = BACKEND_NAMES[args.backend]
    print(f'{config}: {task}, deploy config {deploy_file}')

    task_processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    torch_model = task_processor.build_pytorch_model(None)  # weights: the checkpoint's, next
    load_model_checkpoint(torch_model, args.checkpoint, what=f'the model of {config}')
    torch_model.eval()
    # mmdeploy's export leaves the exported module's forward rewritten: export a copy
    onnx_file = export(task_processor, copy.deepcopy(torch_model), deploy_cfg, args.images[0],
                       work_dir)
    files = backend_files(args.backend, onnx_file)
    try:
        model_file = to_backend(args.backend, onnx_file)
    except Exception as err:  # OpenVINO's conversion: an op it does not have
        for path in files:
            if osp.exists(path):
                os.remove(path)
        raise SystemExit(f'{name} could not convert the exported graph ({type(err).__name__}): '
                         f'{err}\n{onnx_file} was deleted.')

    backend_model = task_processor.build_backend_model(
        [model_file], data_preprocessor_updater=task_processor.update_data_preprocessor)
    tol = dict(score=args.score_tol, box=args.box_tol, mask=args.mask_tol,
               logit=args.logit_tol, argmax=args.argmax_tol)
    calls = None
    for image in args.images:
        report, torch_call, onnx_call = run_both(task, task_processor, torch_model,
                                                 backend_model, image, deploy_cfg, tol)
        calls = calls or (torch_call, onnx_call, report['size'])
        if not report['ok']:
            for path in files:
                os.remove(path)
            print(f"REFUSED: {name}'s results differ from PyTorch's on {image} (input "
                  f"{report['size']}): {report['text']}. {' and '.join(files)} "
                  f"{'was' if len(files) == 1 else 'were'} deleted.", file=sys.stderr)
            return 1
        print(f"{name} matches PyTorch on {image} (input {report['size']}): "
              f"{report['text']}")

    int8_call = None
    if args.calibration:
        int8_file = quantize(args, task_processor, torch_model, onnx_file)
        files += backend_files(args.backend, osp.splitext(onnx_file)[0] + '_int8.onnx')
        int8_model = task_processor.build_backend_model(
            [int8_file], data_preprocessor_updater=task_processor.update_data_preprocessor)
        report, _, int8_call = run_both(task, task_processor, torch_model, int8_model,
                                        args.images[0], deploy_cfg, INT8_TOLERANCES)
        matched = '' if task == 'Segmentation' else \
            ', detections matched within 2 px and 0.05 of score'
        print(f"int8 {name} vs PyTorch on {args.images[0]} (not a check: int8 differs by "
              f"design; evaluate it with tools/deployment/test_onnx.py --int8{matched}): "
              f"{report['text']}")

    if args.benchmark:
        torch_call, onnx_call, size = calls
        torch_s = median_seconds(torch_call, args.repeat)
        onnx_s = median_seconds(onnx_call, args.repeat)
        line = (f'Latency at {size}, batch 1, {torch.get_num_threads()} thread(s), median of '
                f'{args.repeat}: PyTorch (eager) {torch_s * 1e3:.1f} ms, {name} '
                f'{onnx_s * 1e3:.1f} ms ({torch_s / onnx_s:.2f}x)')
        if int8_call:
            int8_s = median_seconds(int8_call, args.repeat)
            line += f', {name} int8 {int8_s * 1e3:.1f} ms ({torch_s / int8_s:.2f}x)'
        print(line)
    print(f'Wrote {describe_files(files)} (opset {deploy_cfg.onnx_config.opset_version}, '
          f"{'dynamic' if args.dynamic else 'static'} height/width)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
