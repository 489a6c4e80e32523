"""Evaluate an exported whole model (end2end.onnx or end2end.xml of tools/deployment/deploy.py) in
ONNX Runtime or OpenVINO on the model config's test set, and print its metrics as tools/test.py
prints PyTorch's; with ``--int8``, evaluate its int8 model beside it.

    python tools/deployment/test_onnx.py DEPLOY_CFG MODEL_CFG --model end2end.onnx
        [--int8 end2end_int8.onnx [--max-drop POINTS]]
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--device cpu]

The command line of mmdeploy's tools/test.py (``DEPLOY_CFG MODEL_CFG --model FILE``; the file may
also come third, without ``--model``), and its steps, through mmdeploy's Python API:
``build_task_processor``, the test set and loader (``build_dataset`` / ``build_dataloader``,
batch 1: the exported graphs are batch 1), ``build_backend_model`` (mmdeploy's End2EndModel in
the deploy config's backend: onnxruntime, or openvino for ``*_openvino_*`` configs and .xml
files), ``build_test_runner`` and ``runner.test()`` with the model config's test evaluator
(CocoMetric, IoUMetric...). DEPLOY_CFG is the deploy config the file was exported with
(configs/deploy/; tools/deployment/deploy.py prints it), MODEL_CFG the model's config (a file or
a zoo name) with the same ``--cfg-options`` as the export plus any that point the test set
elsewhere (data root, annotation file).

``--int8 FILE`` (deploy.py --calib-images: end2end_int8.onnx, or .xml for OpenVINO) evaluates
that model on the same data after the fp32 one and prints both metrics and their latency: the
median time of one image's run of the graph, and the ratio int8 / fp32. It warns, naming both
values, when an int8 metric (COCO bbox and segm mAP, mIoU) is more than ``--max-drop`` points
below fp32's (points: mAP x 100, mIoU as printed; default 1).

What follows the graph is PyTorch's post-processing, not mmdeploy's approximation of it
(ravlt_dense/deploy/evaluation.py): boxes clipped to the unpadded image, segmentation logits
resized bilinearly to the original image before their argmax. With a checkpoint's export the
metrics are PyTorch's (tools/test.py) to the tolerances in docs/deployment.md.
"""
import argparse
import copy
import numbers
import os.path as osp
import statistics
import sys
import warnings

from ravlt_dense.deploy import BACKEND_NAMES, require_backend, require_mmdeploy

# the metrics --max-drop watches, and their points (mAP x 100, mIoU as printed)
WATCHED_METRICS = {'coco/bbox_mAP': 100., 'coco/segm_mAP': 100., 'mIoU': 1.}


class Int8AccuracyWarning(UserWarning):
    """The int8 model lost more than --max-drop points of a metric."""


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('deploy_cfg', help='deploy config the file was exported with '
                        '(configs/deploy/*_onnxruntime_*.py)')
    parser.add_argument('model_cfg', help='model config (file or zoo name)')
    parser.add_argument('onnx', nargs='?', metavar='ONNX_FILE',
                        help='end2end.onnx (or give it with --model)')
    parser.add_argument('--model', help='end2end.onnx, as mmdeploy\'s tools/test.py takes it')
    parser.add_argument('--device', default='cpu', help='onnxruntime device (default: cpu)')
    parser.add_argument('--work-dir', help='where the log and the metrics go (default: '
                        'work_dirs/deploy_test/MODEL_CFG)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per batch: 1, the exported graphs are batch 1')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the model config, e.g. its data root')
    parser.add_argument('--int8', metavar='FILE',
                        help='the int8 model of deploy.py --calib-images, evaluated beside the '
                        'model on the same data')
    parser.add_argument('--max-drop', type=float, default=1., metavar='POINTS',
                        help='with --int8: warn when its bbox/segm mAP or mIoU is more than '
                        'this many points (mAP x 100, mIoU as printed) below the model\'s '
                        '(default 1)')
    args = parser.parse_args(argv)
    if args.onnx and args.model and args.onnx != args.model:
        parser.error(f'two files given: {args.onnx} and --model {args.model}')
    args.model = args.model or args.onnx
    if not args.model:
        parser.error('the ONNX file is missing: --model end2end.onnx')
    if not osp.isfile(args.model):
        parser.error(f'model file not found: {args.model}')
    if args.int8 and not osp.isfile(args.int8):
        parser.error(f'int8 model file not found: {args.int8}')
    if args.max_drop < 0:
        parser.error(f'--max-drop must be >= 0, got {args.max_drop}')
    if args.batch_size != 1:
        parser.error('--batch-size must be 1: the exported graphs take one image')
    return args


def load_configs(args):
    """(model config file, model config, deploy config) with --cfg-options applied, and the
    model config's ``custom_imports`` imported (mmdeploy ignores them)."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings

    from ravlt_dense.tools.cli import model_or_exit
    config = model_or_exit(args.model_cfg, what='model config').config
    if not osp.isfile(args.deploy_cfg):
        raise SystemExit(f'deploy config not found: {args.deploy_cfg}')
    model_cfg = Config.fromfile(config)
    if args.cfg_options:
        model_cfg.merge_from_dict(args.cfg_options)
    if model_cfg.get('custom_imports'):
        import_modules_from_strings(**model_cfg.custom_imports)
    return config, model_cfg, Config.fromfile(args.deploy_cfg)


def exact_model(backend_model, model_cfg, model_file, deploy_cfg):
    """The backend model with PyTorch's post-processing (ravlt_dense.deploy.evaluation)."""
    from mmdeploy.utils import get_codebase_config

    from ravlt_dense.deploy.configs import model_task
    from ravlt_dense.deploy.evaluation import PyTorchPostProcessing, onnx_input_size
    task = model_task(model_cfg)
    kwargs = {}
    if task == 'Segmentation':
        head = model_cfg.model.decode_head
        head = head[-1] if isinstance(head, (list, tuple)) else head
        kwargs = dict(align_corners=head.get('align_corners', False),
                      threshold=head.get('threshold') or 0.3,
                      with_argmax=get_codebase_config(deploy_cfg).get('with_argmax', True))
    return PyTorchPostProcessing(backend_model, task, onnx_input_size(model_file), **kwargs)


def evaluate(task_processor, model_cfg, deploy_cfg, model_file, work_dir, batch_size=1):
    """(metrics, seconds of each image's graph run) of ``model_file`` on the test set."""
    loader = copy.deepcopy(model_cfg.test_dataloader)
    loader['batch_size'] = batch_size
    loader['dataset'] = task_processor.build_dataset(loader['dataset'])
    dataloader = task_processor.build_dataloader(loader)
    backend_model = task_processor.build_backend_model(
        [model_file], data_preprocessor_updater=task_processor.update_data_preprocessor)
    model = exact_model(backend_model, model_cfg, model_file, deploy_cfg)
    runner = task_processor.build_test_runner(model, work_dir, dataloader=dataloader)
    return runner.test(), model.graph_seconds


def format_metrics(metrics) -> str:
    return ', '.join(f'{k}: {float(v):.4f}' if isinstance(v, numbers.Real) else f'{k}: {v}'
                     for k, v in metrics.items())


def compare_int8(fp32, int8, fp32_seconds, int8_seconds, max_drop) -> dict:
    """Print the int8 model's metrics beside fp32's and the latency ratio; warn for each
    watched metric that dropped more than ``max_drop`` points. Returns the latencies (s)."""
    latency = dict(fp32=statistics.median(fp32_seconds), int8=statistics.median(int8_seconds))
    lines = [f'int8 vs fp32 on the same {len(int8_seconds)} image(s):']
    for key, points in WATCHED_METRICS.items():
        if key not in fp32 or key not in int8:
            continue
        drop = (float(fp32[key]) - float(int8[key])) * points
        lines.append(f'  {key}: int8 {float(int8[key]):.4f}, fp32 {float(fp32[key]):.4f} '
                     f'({-drop:+.2f} points)')
        if drop > max_drop:
            warnings.warn(f'int8 {key} {float(int8[key]):.4f} is {drop:.2f} points below fp32 '
                          f'{key} {float(fp32[key]):.4f}: more than --max-drop {max_drop:g}',
                          Int8AccuracyWarning, stacklevel=2)
    lines.append(f"  latency (one image's graph run, median): int8 "
                 f"{latency['int8'] * 1e3:.1f} ms, fp32 {latency['fp32'] * 1e3:.1f} ms "
                 f"(int8 / fp32 = {latency['int8'] / latency['fp32']:.2f})")
    print('\n'.join(lines), flush=True)
    return latency


def main(argv=None):
    args = parse_args(argv)
    require_mmdeploy()  # mmdeploy, onnxruntime, RAVLT and the project's rewrites
    from mmdeploy.apis import build_task_processor

    from ravlt_dense.datasets.checks import check_datasets
    from ravlt_dense.deploy.evaluation import check_deploy_config
    config, model_cfg, deploy_cfg = load_configs(args)
    backend = deploy_cfg.backend_config.type
    if backend in BACKEND_NAMES:
        require_backend(backend)
    try:
        for model_file in filter(None, (args.model, args.int8)):
            check_deploy_config(model_file, deploy_cfg)
    except ValueError as err:
        raise SystemExit(str(err))
    if backend == 'openvino':
        from ravlt_dense.deploy.openvino_backend import refusal
        reason = refusal(model_cfg)
        if reason:
            raise SystemExit(f'{args.model_cfg}: {reason}')
    if (model_cfg.model.get('test_cfg') or {}).get('mode', 'whole') != 'whole':
        raise SystemExit(f"the model's test_cfg.mode is {model_cfg.model.test_cfg.mode!r}: "
                         "the exported graph segments the whole image; evaluate PyTorch with "
                         "--cfg-options model.test_cfg.mode=whole to compare")
    check_datasets(model_cfg, loaders=('test_dataloader', ))
    work_dir = args.work_dir or model_cfg.get('work_dir') or osp.join(
        'work_dirs', 'deploy_test', osp.splitext(osp.basename(config))[0])

    task_processor = build_task_processor(model_cfg, deploy_cfg, args.device)
    name = BACKEND_NAMES[backend]
    metrics, seconds = evaluate(task_processor, model_cfg, deploy_cfg, args.model, work_dir,
                                args.batch_size)
    print(f'{args.model} in {name} on the test set of {config}: {format_metrics(metrics)}',
          flush=True)
    if not args.int8:
        return metrics
    int8_metrics, int8_seconds = evaluate(task_processor, model_cfg, deploy_cfg, args.int8,
                                          osp.join(work_dir, 'int8'), args.batch_size)
    print(f'{args.int8} in {name} on the test set of {config}: '
          f'{format_metrics(int8_metrics)}', flush=True)
    latency = compare_int8(metrics, int8_metrics, seconds, int8_seconds, args.max_drop)
    return dict(fp32=metrics, int8=int8_metrics, latency=latency)


if __name__ == '__main__':
    main()
    sys.exit(0)
