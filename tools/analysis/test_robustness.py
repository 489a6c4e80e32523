"""Evaluate a detector (mmdet 3.x) or segmentor (mmseg 1.x) on images damaged by the common
corruptions of ImageNet-C / COCO-C, as mmdet's tools/analysis_tools/test_robustness.py does.

    python tools/analysis/test_robustness.py CONFIG CHECKPOINT [--corruptions benchmark]
        [--severities 0 1 2 3 4 5] [--metric coco/bbox_mAP] [--out-dir DIR]

Each corruption and severity is a run of the config's own test loop and evaluator (as
tools/test.py), with ``ImageCorruption`` (mmdet's ``Corrupt``, in RGB, each image's draws
seeded) right after the image is loaded; severity 0 is the clean run. --corruptions takes
names and the groups of mmdet's tool: benchmark (the 15 of ImageNet-C, default), all (with the
4 hold-out ones), noise, blur, weather, digital, holdout.
Writes robustness.{md,csv,json,png} (and robustness_examples.png with --show-examples) to the
out dir (default: WORK_DIR/robustness) once every run is done: the metric per corruption and
severity, P (clean), mPC (mean over corruptions and severities 1-5) and rPC (mPC / P), as
mmdet's robustness_eval.py defines them. Needs `pip install imagecorruptions-imaug==1.1.5`.
"""
import argparse
import functools
import os.path as osp
import time

import numpy as np
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import ravlt_dense  # noqa: F401  registers RAVLT
from ravlt_dense.checkpoint import load_model_checkpoint, resolve_checkpoint
from ravlt_dense.datasets.checks import check_datasets
from ravlt_dense.tools.analysis import robustness as R
from ravlt_dense.tools.cli import load_config, parse_tool_args
from ravlt_dense.tools.launch import finish_distributed, setup_cpu_distributed
from ravlt_dense.tools.run_checks import build_datasets


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test a detector or segmentor under image corruptions (mPC, rPC)')
    parser.add_argument('config', help='test config: a file, a name of the model zoo, or '
                        'mmdet::PATH / mmseg::PATH (a config of those packages)')
    parser.add_argument('checkpoint', help='checkpoint file, URL or model zoo name')
    parser.add_argument('--corruptions', nargs='+', default=['benchmark'], metavar='NAME',
                        help='corruptions and groups of them: ' + ', '.join(R.CORRUPTION_GROUPS)
                        + ' (default: benchmark, the 15 of ImageNet-C)')
    parser.add_argument('--severities', type=int, nargs='+', default=list(R.SEVERITIES),
                        metavar='S', help='severities 0 (clean) to 5 (default: 0 1 2 3 4 5)')
    parser.add_argument('--metric', help='the metric to summarise (default: coco/bbox_mAP '
                        'for detectors, mIoU for segmentors); every metric is saved')
    parser.add_argument('--aggregate', choices=['benchmark', 'all'], default='benchmark',
                        help='corruptions mPC averages: the benchmark ones (as mmdet) or all run')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the corruptions\' random draws (noise, snow, ...): '
                        'each image\'s follow from it, the corruption, the severity and the '
                        'image\'s path, whatever the order or the loader workers')
    parser.add_argument('--show-examples', action='store_true',
                        help='also draw the first test image under each corruption at the '
                        'highest severity run (robustness_examples.png)')
    parser.add_argument('--out-dir', help='where the tables and figure go '
                        '(default: WORK_DIR/robustness)')
    parser.add_argument('--work-dir', help='the runner\'s work dir (logs)')
    parser.add_argument('--non-strict', action='store_true',
                        help='load a checkpoint that does not fit the model, with warnings')
    args = parse_tool_args(parser)
    try:
        args.corruptions = R.resolve_corruptions(args.corruptions)
        args.severities = R.check_severities(args.severities)
    except ValueError as err:
        parser.error(str(err))
    return args


def evaluate(runner: Runner, cfg, corruption: str, severity: int, seed: int) -> dict:
    """The metrics of one run of the config's test loop on images with ``corruption`` at
    ``severity`` (0: the test dataloader as the config has it)."""
    if severity:
        runner._test_dataloader = R.corrupted_dataloader(cfg.test_dataloader, corruption,
                                                         severity, seed)
        runner._test_loop = dict(cfg.test_cfg)  # rebuilt by test() with the dataloader above
    # as plain floats (mmseg's are NumPy scalars), the values tools/test.py logs
    return {name: float(value) for name, value in runner.test().items()
            if isinstance(value, (int, float, np.number))}


def evaluate_all(runner: Runner, cfg, args) -> R.RobustnessResults:
    """The clean run (if severity 0 was asked for), then every corruption at every severity;
    a line of progress after each. Sets ``args.metric`` (the summarised metric) if unset."""
    runs = ([('clean', 0)] if 0 in args.severities else []) + [
        (c, s) for c in args.corruptions for s in args.severities if s > 0]
    results = R.RobustnessResults()
    for i, (corruption, severity) in enumerate(runs, 1):
        start = time.perf_counter()
        reference = results.clean or next(
            (m for by_severity in results.corrupted.values() for m in by_severity.values()), None)
        metrics = R.complete_metrics(
            evaluate(runner, cfg, corruption, severity, args.seed), reference,
            f'the images with {corruption} at severity {severity}' if severity
            else 'the clean images')
        args.metric = args.metric or R.default_metric(metrics)
        if args.metric not in metrics:
            raise ValueError(f"--metric {args.metric}: the evaluator reports no such metric; "
                             f"it reports {', '.join(metrics)}")
        if severity:
            results.corrupted.setdefault(corruption, {})[severity] = metrics
        else:
            results.clean = metrics
        what = f'{corruption}, severity {severity}' if severity else 'clean'
        print_log(f'[{i}/{len(runs)}] {what}: {args.metric} {metrics[args.metric]:.4g} '
                  f'({time.perf_counter() - start:.1f} s)', logger='current')
    return results


def write(runner: Runner, results: R.RobustnessResults, args, out_dir: str) -> None:
    """The tables and figures, all or none, and the table on the console."""
    name = osp.splitext(osp.basename(args.config))[0]
    meta = dict(config=args.config, checkpoint=args.checkpoint, seed=args.seed,
                severities=args.severities, corruptions=args.corruptions)
    extra = {}
    if args.show_examples and results.corrupted:
        image = runner.test_dataloader.dataset.get_data_info(0)['img_path']
        extra['robustness_examples.png'] = functools.partial(
            R.plot_examples, image, results.corruptions, max(args.severities), seed=args.seed)
    paths = R.write_results(out_dir, results, args.metric, meta, args.aggregate,
                            f'{name}: {args.metric} under corruptions', extra=extra)
    print(R.markdown_table(results, args.metric, args.aggregate))
    print(f'Wrote {", ".join(paths.values())}')


def main():
    args = parse_args()
    cfg = load_config(args)
    resolve_checkpoint(args.checkpoint)  # a missing file fails before anything runs
    cfg.load_from = None  # loaded below, by our loader
    out_dir = args.out_dir or osp.join(cfg.work_dir, 'robustness')
    if any(s > 0 for s in args.severities):  # fail now, not after the clean run
        R.check_corruption_package(args.corruptions)
        R.corrupted_dataloader(cfg.test_dataloader, args.corruptions[0], 1)

    check_datasets(cfg, loaders=('test_dataloader', ))
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    load_model_checkpoint(runner.model, args.checkpoint, strict=not args.non_strict,
                          what=f'the model of {args.config}')
    build_datasets(runner, cfg, ('test_loop', ))
    results = evaluate_all(runner, cfg, args)
    if is_main_process():
        write(runner, results, args, out_dir)
    finish_distributed()


if __name__ == '__main__':
    main()
