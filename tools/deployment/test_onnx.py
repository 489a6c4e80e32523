"""Evaluate an exported whole model (end2end.onnx of tools/deployment/deploy.py) in onnxruntime on
the model config's test set, and print its metrics as tools/test.py prints PyTorch's.

    python tools/deployment/test_onnx.py DEPLOY_CFG MODEL_CFG --model end2end.onnx
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--device cpu]

The command line of mmdeploy's tools/test.py (``DEPLOY_CFG MODEL_CFG --model FILE``; the file may
also come third, without ``--model``), and its steps, through mmdeploy's Python API:
``build_task_processor``, the test set and loader (``build_dataset`` / ``build_dataloader``,
batch 1: the exported graphs are batch 1), ``build_backend_model`` (mmdeploy's End2EndModel in
onnxruntime), ``build_test_runner`` and ``runner.test()`` with the model config's test
evaluator (CocoMetric, IoUMetric...). DEPLOY_CFG is the deploy config the file was exported
with (configs/deploy/; tools/deployment/deploy.py prints it), MODEL_CFG the model's config (a
file or a zoo name) with the same ``--cfg-options`` as the export plus any that point the test
set elsewhere (data root, annotation file).

What follows the graph is PyTorch's post-processing, not mmdeploy's approximation of it
(ravlt_dense/deploy/evaluation.py): boxes clipped to the unpadded image, segmentation logits
resized bilinearly to the original image before their argmax. With a checkpoint's export the
metrics are PyTorch's (tools/test.py) to the tolerances in docs/deployment.md.
"""
import argparse
import copy
import numbers
import os.path as osp
import sys

from ravlt_dense.deploy import require_mmdeploy


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
    args = parser.parse_args(argv)
    if args.onnx and args.model and args.onnx != args.model:
        parser.error(f'two files given: {args.onnx} and --model {args.model}')
    args.model = args.model or args.onnx
    if not args.model:
        parser.error('the ONNX file is missing: --model end2end.onnx')
    if not osp.isfile(args.model):
        parser.error(f'ONNX file not found: {args.model}')
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


def exact_model(backend_model, model_cfg, onnx_file, deploy_cfg):
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
    return PyTorchPostProcessing(backend_model, task, onnx_input_size(onnx_file), **kwargs)


def main(argv=None):
    args = parse_args(argv)
    require_mmdeploy()  # mmdeploy, onnxruntime, RAVLT and the project's rewrites
    from mmdeploy.apis import build_task_processor

    from ravlt_dense.datasets.checks import check_datasets
    from ravlt_dense.deploy.evaluation import check_deploy_config
    config, model_cfg, deploy_cfg = load_configs(args)
    try:
        check_deploy_config(args.model, deploy_cfg)
    except ValueError as err:
        raise SystemExit(str(err))
    if (model_cfg.model.get('test_cfg') or {}).get('mode', 'whole') != 'whole':
        raise SystemExit(f"the model's test_cfg.mode is {model_cfg.model.test_cfg.mode!r}: "
                         "the exported graph segments the whole image; evaluate PyTorch with "
                         "--cfg-options model.test_cfg.mode=whole to compare")
    check_datasets(model_cfg, loaders=('test_dataloader', ))
    work_dir = args.work_dir or model_cfg.get('work_dir') or osp.join(
        'work_dirs', 'deploy_test', osp.splitext(osp.basename(config))[0])

    task_processor = build_task_processor(model_cfg, deploy_cfg, args.device)
    loader = copy.deepcopy(model_cfg.test_dataloader)
    loader['batch_size'] = args.batch_size
    loader['dataset'] = task_processor.build_dataset(loader['dataset'])
    dataloader = task_processor.build_dataloader(loader)
    backend_model = task_processor.build_backend_model(
        [args.model], data_preprocessor_updater=task_processor.update_data_preprocessor)
    model = exact_model(backend_model, model_cfg, args.model, deploy_cfg)
    runner = task_processor.build_test_runner(model, work_dir, dataloader=dataloader)
    metrics = runner.test()
    print(f'{args.model} in onnxruntime on the test set of {config}: ' + ', '.join(
        f'{k}: {float(v):.4f}' if isinstance(v, numbers.Real) else f'{k}: {v}'
        for k, v in metrics.items()))
    return metrics


if __name__ == '__main__':
    main()
    sys.exit(0)
