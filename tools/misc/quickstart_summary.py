"""Print the quick start's metrics before and after training, from the test runs' logs.

    python tools/misc/quickstart_summary.py work_dirs/quickstart
"""
import argparse
import glob
import json
import os.path as osp

METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco_panoptic/PQ',
           'mIoU', 'aAcc')


def test_metrics(run_dir: str) -> dict:
    """The metrics line of the newest mmengine json log under run_dir (a test run's)."""
    logs = sorted(glob.glob(osp.join(run_dir, '**', '*.json'), recursive=True),
                  key=osp.getmtime)
    for log in reversed(logs):
        with open(log) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for line in reversed(lines):
            if any(k in line for k in METRICS):
                return line
    return {}


def had_no_detections(run_dir: str) -> bool:
    """mmdet's CocoMetric reports nothing when no box passes the score threshold (an untrained
    RetinaNet's scores start at its 0.01 prior): its mAP is 0 by definition."""
    for log in glob.glob(osp.join(run_dir, '**', '*.log'), recursive=True):
        with open(log) as f:
            if 'The testing results of the whole dataset is empty' in f.read():
                return True
    return False


def fmt(key: str, value) -> str:
    if value is None:
        return '-'
    if isinstance(value, str):
        return value
    return f'{value:.3f}' if key.startswith('coco/') else f'{value:.2f}'  # mAP 0..1, PQ/IoU %


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('work_dir')
    args = parser.parse_args(argv)
    rows = []
    for model_dir in sorted(glob.glob(osp.join(args.work_dir, '*'))):
        before = test_metrics(osp.join(model_dir, 'untrained'))
        after = test_metrics(osp.join(model_dir, 'trained'))
        empty_before = had_no_detections(osp.join(model_dir, 'untrained'))
        for key in METRICS:
            if key in after:
                value = before.get(key)
                if value is None and empty_before and key.startswith('coco/'):
                    value = '0.000 (no detections)'
                rows.append((osp.basename(model_dir), key, value, after[key]))
    print('| model (RAVLT-T) | metric | untrained | trained |')
    print('|---|---|---|---|')
    for model, key, before, after in rows:
        print(f'| {model} | {key} | {fmt(key, before)} | {fmt(key, after)} |')
    return rows


if __name__ == '__main__':
    main()
