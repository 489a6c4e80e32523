"""Evaluate a trained detector (mmdet 3.x) or segmentor (mmseg 1.x).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR]
Flags follow mmdet's and mmseg's tools/test.py. CHECKPOINT is a file, an http(s) URL
(downloaded once into the torch hub cache) or a name of the model zoo (configs/metafile.yml),
ours or one of the authors' mmdet 2.x / mmseg 0.x checkpoints (converted on load, every key
checked; --non-strict loads what fits instead), e.g.
    python tools/test.py configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py \\
        https://huggingface.co/aldjalkdf/RAVLT/resolve/main/maskrcnn_s_1x_12_epoch.pth
"""
import argparse

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import ravlt_dense  # noqa: F401  registers RAVLT
from ravlt_dense.checkpoint import load_model_checkpoint, resolve_checkpoint
from ravlt_dense.datasets.checks import check_datasets
from ravlt_dense.tools.cli import load_config, parse_tool_args
from ravlt_dense.tools.launch import finish_distributed, setup_cpu_distributed
from ravlt_dense.tools.run_checks import build_datasets


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector or segmentor')
    parser.add_argument('config', help='test config: a file, a name of the model zoo, or '
                        'mmdet::PATH / mmseg::PATH (a config of those packages)')
    parser.add_argument('checkpoint', help='checkpoint file, URL or model zoo name: ours, or the '
                        'authors\' mmdet 2.x / mmseg 0.x release (converted on load)')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='detection: a .pkl file for the raw predictions; '
                        'segmentation: a dir for the predicted label maps')
    parser.add_argument('--show', action='store_true', help='show the predictions')
    parser.add_argument('--show-dir', help='dir to save images with the predictions drawn')
    parser.add_argument('--wait-time', type=float, default=2, help='interval of --show (s)')
    parser.add_argument('--non-strict', action='store_true',
                        help='load a checkpoint that does not fit the model, with warnings '
                        '(mmengine\'s default); without it such a checkpoint is an error')
    return parse_tool_args(parser)


def enable_visualization(cfg: Config, args) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise RuntimeError('--show/--show-dir need default_hooks.visualization in the config')
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if cfg.get('default_scope') == 'mmseg':
            cfg.visualizer['save_dir'] = args.show_dir
        else:
            hook['test_out_dir'] = args.show_dir


def load_checkpoint(runner, checkpoint: str, config: str, strict: bool = True) -> None:
    """Load the model's checkpoint (file, URL or zoo name; ours or the release's, converted on
    load), refusing one that does not fit the model unless ``strict`` is False.

    mmengine's runner loads ``load_from`` non-strictly: a checkpoint of another variant or model
    only logs warnings and the metrics of a half-initialised model follow.
    """
    try:
        load_model_checkpoint(runner.model, checkpoint, strict=strict,
                              what=f'the model of {config}')
    except ValueError as err:
        raise ValueError(
            f'{err}\nEvaluate it with the config it was trained with; --non-strict evaluates '
            'anyway, loading what fits (mmengine\'s default).') from None


def main():
    args = parse_args()
    cfg = load_config(args)
    resolve_checkpoint(args.checkpoint)  # a missing file fails before the runner is built
    cfg.load_from = None  # loaded below, by our loader
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.out and cfg.get('default_scope') == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    check_datasets(cfg, loaders=('test_dataloader', ))
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    load_checkpoint(runner, args.checkpoint, args.config, strict=not args.non_strict)
    build_datasets(runner, cfg, ('test_loop', ))
    if args.out and cfg.get('default_scope') != 'mmseg':
        from mmdet.evaluation import DumpDetResults
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file for detection, got {args.out}')
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
