"""Seconds per training iteration, data time and peak memory from mmengine's own logs, and the
time a whole schedule would take at that speed.

    python tools/analysis/train_time.py --run NAME WORK_DIR SCHEDULE_ITERS [--run ...]
        [--skip 5] [--gpus 8]

For each run, the training iterations of its latest ``*/vis_data/scalars.json`` (the
``time``, ``data_time`` and ``memory`` that mmengine's IterTimerHook and LogProcessor record;
log every iteration with ``default_hooks.logger.interval=1 log_processor.window_size=1``):
medians after the first ``--skip`` (warm-up: cuDNN autotuning, allocator growth) and the
largest ``memory`` (MiB, CUDA only). The projection multiplies the median iteration by the
schedule's iterations: one GPU's iteration at the config's images per GPU stands for one
iteration of ``--gpus`` such GPUs (data-parallel, the communication not counted).
Prints a Markdown table.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

# The paper's 1x detection schedule: 12 epochs of COCO train2017 at 16 images per iteration.
COCO_TRAIN_IMAGES = 118287
COCO_1X_ITERS = 12 * -(-COCO_TRAIN_IMAGES // 16)


def read_scalars(work_dir: str) -> list:
    """The training records (those with a ``time``) of the newest run in ``work_dir``."""
    logs = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    if not logs:
        raise FileNotFoundError(f'no */vis_data/scalars.json under {work_dir}: did it train?')
    records = [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]
    return [r for r in records if 'time' in r and 'loss' in r]


def summarise(records: list, skip: int) -> dict:
    """Medians of time and data_time after ``skip`` records, and the largest memory."""
    timed = records[skip:] if len(records) > skip else records[-1:]
    if not timed:
        raise ValueError('no training iterations logged')
    time = statistics.median(r['time'] for r in timed)
    data_time = statistics.median(r['data_time'] for r in timed)
    memory = max((r['memory'] for r in records if 'memory' in r), default=None)
    return dict(iters=len(timed), time=time, data_time=data_time, memory=memory)


def table(runs: list, skip: int, gpus: int) -> str:
    lines = [
        f'| run | iterations timed | s/iter | data s/iter | s/iter without data | peak memory '
        f'(MiB) | schedule (iterations) | projected on {gpus} GPUs (h) |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name, work_dir, schedule in runs:
        try:
            s = summarise(read_scalars(work_dir), skip)
        except (OSError, ValueError) as err:
            lines.append(f'| {name} | not measured: {err} | | | | | {schedule} | |')
            continue
        memory = '-' if s['memory'] is None else f'{s["memory"]:.0f}'
        hours = int(schedule) * s['time'] / 3600
        lines.append(f'| {name} | {s["iters"]} | {s["time"]:.3f} | {s["data_time"]:.3f} | '
                     f'{s["time"] - s["data_time"]:.3f} | {memory} | {int(schedule):,} | '
                     f'{hours:.1f} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--run', nargs=3, action='append', required=True,
                        metavar=('NAME', 'WORK_DIR', 'SCHEDULE_ITERS'),
                        help=f'a training run; e.g. the COCO 1x schedule is {COCO_1X_ITERS} '
                        'iterations, ADE20K 160k 160000')
    parser.add_argument('--skip', type=int, default=5, help='warm-up iterations left out')
    parser.add_argument('--gpus', type=int, default=8, help='GPUs of the projection')
    args = parser.parse_args(argv)
    for name, _, schedule in args.run:
        if not schedule.isdigit():
            parser.error(f'SCHEDULE_ITERS of {name} must be a whole number, got {schedule!r}')
    print(table(args.run, args.skip, args.gpus))


if __name__ == '__main__':
    sys.exit(main())
