"""Train a detector (mmdet 3.x) or segmentor (mmseg 1.x) from a config.

    python tools/train.py configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py
        [--work-dir DIR] [--amp] [--resume]
Flags follow mmdet's and mmseg's tools/train.py.
"""
import argparse
import logging

from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import ravlt_dense  # noqa: F401  registers RAVLT and the checkpoint types that resuming needs
from ravlt_dense.datasets.checks import check_datasets
from ravlt_dense.tools.cli import add_custom_import, load_config, parse_tool_args
from ravlt_dense.tools.launch import finish_distributed, setup_cpu_distributed
from ravlt_dense.tools.precision import fit_optim_wrapper_to_device
from ravlt_dense.tools.run_checks import build_datasets
from ravlt_dense.tools.saving import check_resume, save_checkpoints_atomically


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='train config: a file, a name of the model zoo, or '
                        'mmdet::PATH / mmseg::PATH (a config of those packages)')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the total batch size (auto_scale_lr in the config)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the '
                        'work dir when no path is given (a damaged latest one is skipped for '
                        'the newest earlier one that loads, with a warning)')
    return parse_tool_args(parser)


def main():
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        else:
            assert optim_wrapper == 'OptimWrapper', (
                f'--amp is only supported with OptimWrapper, got {optim_wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    fit_optim_wrapper_to_device(cfg)  # no GPU: fp32 instead of the config's AMP, with a warning
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    # a damaged checkpoint to resume from: skipped (auto) or named (a path), before the run
    resume_warnings = check_resume(cfg)
    # checkpoints written under a temporary name and renamed when whole
    save_checkpoints_atomically(cfg)

    if cfg.get('compile'):  # dynamo cannot trace an optimizer with ConfigDict param groups
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='PlainParamGroupsHook')]
        add_custom_import(cfg, 'ravlt_dense.engine')  # registers the hook

    check_datasets(cfg, loaders=('train_dataloader', 'val_dataloader'))
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    for warning in resume_warnings:  # in the run's log, now that it has one
        print_log(warning, logger='current', level=logging.WARNING)
    build_datasets(runner, cfg, ('train_loop', 'val_loop'))
    runner.train()
    finish_distributed()


if __name__ == '__main__':
    main()
