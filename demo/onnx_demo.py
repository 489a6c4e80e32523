"""Run a model written by tools/deployment/deploy.py (end2end.onnx in ONNX Runtime, end2end.xml
in OpenVINO; their int8 models alike) and draw its results, as demo/image_demo.py and
demo/seg_demo.py draw PyTorch's.

    python demo/onnx_demo.py CONFIG MODEL_FILE IMAGE_OR_DIR [...] [--out-dir outputs]
        [--backend onnxruntime|openvino] [--pred-score-thr 0.3] [--cfg-options KEY=VALUE ...]

CONFIG is the model's config (file or zoo name) the file was exported from: its test pipeline
prepares the images, its dataset names the classes. The backend is OpenVINO for a .xml file,
else ONNX Runtime unless ``--backend openvino`` (OpenVINO reads ONNX files too). Inference goes
through mmdeploy's End2EndModel (boxes scaled back to the image, masks pasted, the segmentation
argmax). For every image NAME.EXT it writes OUT_DIR/vis/NAME.png.
"""
import argparse
import os
import os.path as osp
import sys

from ravlt_dense.deploy import BACKEND_NAMES, require_backend, require_mmdeploy
from ravlt_dense.tools.images import collect_images, unique_stem


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config (file or zoo name) the ONNX file was exported '
                        'from')
    parser.add_argument('onnx', metavar='MODEL_FILE', help='end2end.onnx (or end2end.xml for '
                        'OpenVINO) of tools/deployment/deploy.py')
    parser.add_argument('inputs', nargs='+', metavar='IMAGE_OR_DIR')
    parser.add_argument('--out-dir', default='outputs', help='where vis/ goes')
    parser.add_argument('--backend', choices=list(BACKEND_NAMES),
                        help='runtime (default: openvino for a .xml file, else onnxruntime)')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='draw detections with at least this score')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='the settings given to tools/deployment/deploy.py, if any')
    args = parser.parse_args(argv)
    if not osp.isfile(args.onnx):
        parser.error(f'model file not found: {args.onnx}')
    if args.backend is None:
        args.backend = 'openvino' if args.onnx.endswith('.xml') else 'onnxruntime'
    elif args.backend == 'onnxruntime' and args.onnx.endswith('.xml'):
        parser.error(f'{args.onnx} is OpenVINO IR: --backend openvino runs it')
    try:
        args.images = collect_images(args.inputs)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return args


def main(argv=None):
    args = parse_args(argv)
    require_mmdeploy()  # mmdeploy, onnxruntime, RAVLT and the project's rewrites
    require_backend(args.backend)
    from mmdeploy.apis import build_task_processor
    from mmdeploy.utils import get_input_shape
    from mmengine.config import Config

    from ravlt_dense.deploy.configs import deploy_config_path, model_task
    from ravlt_dense.deploy.evaluation import onnx_input_size
    from ravlt_dense.tools.cli import model_or_exit
    config = model_or_exit(args.config).config
    model_cfg = Config.fromfile(config)
    if args.cfg_options:
        model_cfg.merge_from_dict(args.cfg_options)
    if args.backend == 'openvino':
        from ravlt_dense.deploy.openvino_backend import refusal
        reason = refusal(model_cfg)
        if reason:
            raise SystemExit(f'{args.config}: {reason}')
    deploy_cfg = Config.fromfile(deploy_config_path(
        model_cfg, onnx_input_size(args.onnx) is None, args.backend))
    task_processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    model = task_processor.build_backend_model(
        [args.onnx], data_preprocessor_updater=task_processor.update_data_preprocessor)
    vis_dir = osp.join(args.out_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    used = set()
    for path in args.images:
        data = task_processor.create_input(path, get_input_shape(deploy_cfg))[0]
        result = model.test_step(data)[0]
        summary = 'segmented'
        if model_task(model_cfg) != 'Segmentation':
            result.pred_instances = result.pred_instances[
                result.pred_instances.scores >= args.pred_score_thr]
            summary = f'{len(result.pred_instances)} instance(s) with score >= ' \
                f'{args.pred_score_thr}'
        vis_file = osp.join(vis_dir, unique_stem(path, used) + '.png')
        task_processor.visualize(image=path, model=model, result=result, output_file=vis_file,
                                 window_name='onnx_demo', show_result=False)
        print(f'{path}: {summary} -> {vis_file}', flush=True)


if __name__ == '__main__':
    sys.exit(main())
