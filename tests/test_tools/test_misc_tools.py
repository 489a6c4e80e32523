"""tools/misc/: the quick start's summary of its test logs."""
import json

from conftest import load_script


def test_quickstart_summary_reads_test_logs(tmp_path):
    summary = load_script('tools/misc/quickstart_summary.py')
    runs = {'maskrcnn/untrained': {'coco/bbox_mAP': 0.0, 'coco/segm_mAP': 0.0, 'step': 6},
            'maskrcnn/trained': {'coco/bbox_mAP': 0.347, 'coco/segm_mAP': 0.342, 'step': 6},
            'retinanet/untrained': {'data_time': 0.02, 'step': 6},  # no detections: no metrics
            'retinanet/trained': {'coco/bbox_mAP': 0.144, 'step': 6}}
    for run_dir, line in runs.items():
        log_dir = tmp_path / run_dir / '20261125_000000'
        (log_dir / 'vis_data').mkdir(parents=True)
        (log_dir / 'vis_data' / '20261125_000000.json').write_text(json.dumps(line) + '\n')
        (log_dir / '20261125_000000.log').write_text(
            'ERROR - The testing results of the whole dataset is empty.\n'
            if run_dir == 'retinanet/untrained' else 'INFO - Epoch(test) [6/6]\n')
    rows = summary.main([str(tmp_path)])
    assert ('maskrcnn', 'coco/bbox_mAP', 0.0, 0.347) in rows
    assert ('maskrcnn', 'coco/segm_mAP', 0.0, 0.342) in rows
    assert ('retinanet', 'coco/bbox_mAP', '0.000 (no detections)', 0.144) in rows
    assert len(rows) == 3
