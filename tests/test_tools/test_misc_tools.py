"""tools/misc/: the quick start's summary of its test logs, mmcv's C++ standard for torch."""
import json
import sys

import pytest

from conftest import load_script, python_with_stub, run_tool


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


SETUP_PY = '''extra_compile_args = {'cxx': ['-std=c++17']}
extra_compile_args['nvcc'] += ['-std=c++17']
'''


@pytest.mark.parametrize('torch_version, standard', [
    ('2.13.0+cu130', 'c++17'), ('2.9.1', 'c++17'), ('2.14.1+cu130', 'c++20'),
    ('2.14.0.dev20260721', 'c++20'), ('2.15.0', 'c++20'), ('3.0.0', 'c++20')])
def test_mmcv_build_gets_the_cxx_standard_its_torch_needs(tmp_path, torch_version, standard):
    source = tmp_path / 'onedl_mmcv-2.3.6'
    source.mkdir()
    (source / 'setup.py').write_text(SETUP_PY)
    python = python_with_stub(tmp_path, 'torch', f'__version__ = {torch_version!r}\n')
    proc = run_tool(['bash', 'tools/misc/mmcv_cxx_standard.sh', source, python])
    assert (source / 'setup.py').read_text() == SETUP_PY.replace('c++17', standard)
    if standard == 'c++20':  # says what it changed, and why
        assert proc.stdout.strip() == (f'torch {torch_version} needs C++20: building '
                                       'onedl_mmcv-2.3.6 with -std=c++20 (its setup.py asks '
                                       'for C++17)')
    else:
        assert proc.stdout == ''


def test_mmcv_cxx_standard_names_what_is_missing(tmp_path):
    proc = run_tool(['bash', 'tools/misc/mmcv_cxx_standard.sh', tmp_path, sys.executable],
                    check=False)
    assert proc.returncode == 1 and f'no setup.py in {tmp_path}' in proc.stderr
    (tmp_path / 'setup.py').write_text(SETUP_PY)
    python = python_with_stub(tmp_path, 'torch', "raise ImportError('no torch here')\n")
    proc = run_tool(['bash', 'tools/misc/mmcv_cxx_standard.sh', tmp_path, python], check=False)
    assert proc.returncode == 1 and f'torch does not import in {python}' in proc.stderr
    assert (tmp_path / 'setup.py').read_text() == SETUP_PY  # nothing changed
