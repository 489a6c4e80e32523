"""tools/analysis/profile_backbone.py on CPU at a tiny size: stage times, the process's CPU time
and page faults, operator kinds."""
import re

from conftest import run_tool


def test_profile_reports_every_stage_and_operator_kinds():
    proc = run_tool(['tools/analysis/profile_backbone.py', '--arch', 't', '--shape', '64', '96',
                     '--batch', '1', '--steps', '1', '--dtype', 'float32', '--device', 'cpu',
                     '--attn', 'mix', '--by-shape', '4'])
    out = proc.stdout
    assert 'RAVLT-T forward, 1x3x64x96, float32' in out
    stage_rows = re.findall(r'^\| (stem|stage \d) \| ([\d.]+) \| (\d+)% \|$', out, re.M)
    assert [r[0] for r in stage_rows] == ['stem', 'stage 1', 'stage 2', 'stage 3', 'stage 4']
    assert all(float(ms) > 0 for _, ms, _ in stage_rows)
    assert 97 <= sum(int(share) for *_, share in stage_rows) <= 103  # rounded shares
    process = re.search(r'Process, per forward: wall ([\d.]+) s, CPU user ([\d.]+) s, system '
                        r'([\d.]+) s, ([\d,]+) minor page faults; peak resident memory (\d+) MB',
                        out)
    assert process and float(process[1]) > 0 and int(process[5]) > 0
    kinds = dict(re.findall(r'^\| (convolution|matrix products|normalisation) \| ([\d.]+) \|', out,
                            re.M))
    assert float(kinds['convolution']) > 0 and float(kinds['matrix products']) > 0
    # the costliest operators by input shape: four rows, each with the shapes it was called with
    shaped = re.findall(r'^\| `(aten::\w+)` \| `(\[.*\])` \| ([\d.]+) \|$', out, re.M)
    assert len(shaped) == 4 and all(float(ms) > 0 for *_, ms in shaped)
    assert any(shapes.startswith('[[1, ') for _, shapes, _ in shaped)  # a batch-1 activation
