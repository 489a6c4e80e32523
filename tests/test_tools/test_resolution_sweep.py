"""The resolution sweep (ravlt_dense.tools.benchmark.sweep, command line
tools/analysis/resolution_sweep.py) on tiny networks of known growth: the fitted slope of peak
memory is about 1 for 1x1 convolutions and about 2 for global softmax attention; a model over the
time or the memory budget is stopped and marked, its larger sizes not run, and the sweep finishes
with the others' rows; the report's answers (crossovers, RAVLT's stage shares) from rows; bad input.

The networks are built by ``module:factory`` names from this module, which the sweep's child
processes import (this folder on their PYTHONPATH): nothing here imports conftest at the top.
"""
import os
import re
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ravlt_dense.tools.benchmark import report

HERE = Path(__file__).resolve().parent
# Sizes at which every map and attention matrix is past the CPU's caches (the 128x128 map of 1x1
# convs runs from cache and looks cheaper than linear): growth by the work alone.
SIZES = ['192', '320']


class Pointwise(nn.Module):
    """1x1 convolutions at the input's resolution: the same work and memory for every pixel
    (256 channels: each map is past the C library's 32 MB threshold at every size tested, so
    it is fresh memory the peak counts whole)."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.expand, self.reduce = nn.Conv2d(3, width, 1), nn.Conv2d(width, 32, 1)

    def forward(self, x):
        return torch.relu(self.reduce(torch.relu(self.expand(x))))


class GlobalAttention(nn.Module):
    """Every 4x4 patch attends to every other through a softmax written out: an N x N matrix in
    time and in memory."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.scale = dim**-0.5

    def forward(self, x):
        q, k, v = self.qkv(self.embed(x)).flatten(2).chunk(3, dim=1)  # (B, dim, N) each
        attn = torch.softmax(q.transpose(1, 2) @ k * self.scale, dim=-1)
        return attn @ v.transpose(1, 2)


class OverBudget(nn.Module):
    """A pass that sleeps (``what='time'``) or takes memory in 64 MB steps (``what='memory'``)
    until the sweep stops it."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if self.what == 'memory':  # at most 4 GB, should the watch fail
            held = [torch.ones(2**24) for _ in range(64)]  # noqa: F841
        time.sleep(60)
        return self.conv(x)


def pointwise(shape):
    return Pointwise()


def global_attention(shape):
    return GlobalAttention()


def slow(shape):
    return OverBudget('time')


def hungry(shape):
    return OverBudget('memory')


def tiny_ravlt(shape):
    """RAVLT in the released mix (softmax in stages 3 and 4), the tests' tiny widths."""
    from ravlt_dense.models.backbones.ravlt import RAVLT

    from conftest import TINY_ARCH
    return RAVLT(TINY_ARCH)


@pytest.fixture(scope='module')
def sweep_tool():
    from ravlt_dense.tools.benchmark import sweep
    return sweep


def table_row(md: str, section: str, name: str) -> list:
    """The cells of ``name``'s row in the table under ``## section``."""
    part = md.split(f'## {section}')[1].split('\n## ')[0]
    line = next(ln for ln in part.splitlines() if ln.startswith(f'| {name} |'))
    return [c.strip() for c in line.strip('|').split('|')][1:]


def test_slopes_and_budgets(sweep_tool, tmp_path, monkeypatch):
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [str(HERE)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    names = [f'test_resolution_sweep:{f}' for f in ('pointwise', 'global_attention', 'slow',
                                                    'hungry')]
    rows = sweep_tool.main(['--models', *names, '--sizes', *SIZES, '--max-latency', '10',
                            '--max-memory-gb', '1', '--fit-last', '2', '--repeat', '5',
                            '--work-dir', str(tmp_path), '--plot', str(tmp_path / 'fig.png')])
    notes = {(r['model'].split(':')[1], r['input']): r.get('note', '') for r in rows}
    # the sweep finished: every model at every size has its row, size by size
    assert [(r['model'].split(':')[1], r['input']) for r in rows] == [
        (n.split(':')[1], f'{s}x{s}') for s in SIZES for n in names]
    for name in ('pointwise', 'global_attention'):
        assert all(notes[name, f'{s}x{s}'] == '' for s in SIZES), notes
    # over budget at the first size: stopped and marked there, not run at the larger one
    for name, budget in (('slow', 'the 10 s time budget'), ('hungry', 'the 1 GB memory budget')):
        assert notes[name, '192x192'].startswith(f'stopped: over {budget}'), notes
        assert notes[name, '320x320'] == 'not run: over budget at 192x192'

    md = (tmp_path / 'resolution_backbone.md').read_text()
    slopes = {}
    for section in ('Latency', 'Peak memory'):
        for name in ('pointwise', 'global_attention'):
            cells = table_row(md, section, f'test_resolution_sweep:{name}')
            assert len(cells) == len(SIZES) + 1 and all(
                re.fullmatch(r'[\d,]+', c) for c in cells[:-1]), cells
            # the slope and the sizes it was fitted over
            slopes[section, name] = float(re.fullmatch(r'(\d+\.\d\d) \(192–320\)',
                                                       cells[-1]).group(1))
        assert table_row(md, section, 'test_resolution_sweep:slow') == [
            '**over time budget**', 'not run', '–']
        assert table_row(md, section, 'test_resolution_sweep:hungry') == [
            '**over memory budget**', 'not run', '–']
    assert 'fitted over the 2 largest sizes measured, 192x192 to 320x320' in md
    # The slopes of memory, which is counted: 1 per pixel, 2 for the N x N softmax. Those of
    # latency are fitted and printed as well, but not held to a value: on shared cores a
    # process's timings move by up to 2x, a slope over 2.8x the pixels by up to 0.7.
    assert 0.8 < slopes['Peak memory', 'pointwise'] < 1.2, slopes
    assert 1.6 < slopes['Peak memory', 'global_attention'] < 2.4, slopes
    assert (tmp_path / 'fig.png').stat().st_size > 0
    csv_rows = report.read_csv(tmp_path / 'resolution_backbone.csv')
    assert [r['input'] for r in csv_rows] == [r['input'] for r in rows]
    assert sorted(os.listdir(tmp_path)) == ['fig.png', 'resolution_backbone.csv',
                                            'resolution_backbone.md']  # no temporary left


def test_profile_of_ravlt_gives_each_stage_and_its_softmax():
    from ravlt_dense.tools.benchmark import case
    rows = []
    case.measure(dict(
        name='test_resolution_sweep:tiny_ravlt', level='backbone', shape=(64, 64), batches=[1],
        train_batch=0, device='cpu', dtype='float32', warmup=1, repeat=1, flops=False,
        path='fast', profile=True), rows.append)
    [row] = rows
    stages = [row[f'share_s{i}'] for i in range(1, 5)]
    assert all(0 < s < 1 for s in stages) and row['share_stem'] > 0
    assert row['share_stem'] + sum(stages) <= 1.01  # parts of one forward
    # the softmax attention (SDPA) of stages 3 and 4 is part of their time
    assert 0 < row['share_s3_softmax'] < row['share_s3']
    assert 0 < row['share_s4_softmax'] < row['share_s4']
    assert 'share_s1_softmax' not in row  # RALA stages call no SDPA


def test_slope_is_a_least_squares_fit_over_the_largest_sizes():
    # a cache bump at the smallest size, then 1x, 4x, 16x the pixels at 1x, 4x, 64x the time
    rows = [dict(model='m', description='m', pixels=p, latency_ms=ms)
            for p, ms in ((1e3, 500.), (1e4, 1.), (4e4, 4.), (1.6e5, 64.))]
    [(slope, pixels)] = report.fitted_slopes(rows, 'latency_ms', 3, name=report.label).values()
    assert pixels == [1e4, 4e4, 1.6e5]
    assert slope == pytest.approx(1.5)  # log 64 / (2 log 4), not the last pair's 2
    assert report.scaling_slopes(rows, 'latency_ms') == pytest.approx({'m, inference eager b1': 2})


def _row(model, size, ms, mb, **shares):
    return dict(model=model, description=model, level='backbone', input=f'{size}x{size}',
                pixels=size * size, latency_ms=ms, peak_mem_MB=mb, device='cpu', **shares)


def test_report_answers_where_curves_cross_and_stage_3_dominates(sweep_tool):
    # all-RALA: slower than Swin-T up to 512, faster from 1024 on (a dip at 768 resets it);
    # lighter at every size
    rows = [_row('swin_t', s, ms, 100.) for s, ms in ((224, 10), (512, 50), (768, 100),
                                                     (1024, 200), (2048, 800))]
    rows += [_row('ravlt_s_rala', s, ms, 90.) for s, ms in ((224, 12), (512, 40), (768, 110),
                                                           (1024, 150), (2048, 500))]
    text = '\n'.join(sweep_tool.crossover_lines(rows, 'backbone'))
    assert ('ravlt_s_rala against swin_t, time: ahead from 1024x1024 on (1.33x at 1024x1024, '
            '1.60x at 2048x2048)') in text
    assert 'ravlt_s_rala against swin_t, memory: ahead at every size measured' in text
    slower = [dict(r, latency_ms=r['latency_ms'] * 3) if r['model'] == 'ravlt_s_rala' else r
              for r in rows]
    assert ('time: not ahead up to 2048x2048, the largest size both measured (0.53x there)'
            in '\n'.join(sweep_tool.crossover_lines(slower, 'backbone')))
    shares = [_row('ravlt_s', s, 1., 1., share_s3=v + .1, share_s3_softmax=v)
              for s, v in ((224, .1), (512, .3), (1024, .6), (2048, .8))]
    text = '\n'.join(sweep_tool.share_lines(shares))
    assert ("ravlt_s: stage 3's softmax attention takes more than half of the forward from "
            '1024x1024 on (10% at 224x224, 30% at 512x512, 60% at 1024x1024, 80% at 2048x2048)'
            ) in text
    assert '| ravlt_s | 1024x1024 | – | – | – | 70% | – | 60% | – |' in text


@pytest.mark.parametrize('argv, message', [
    (['--models', 'ravlt_x'], "unknown backbone 'ravlt_x'; choose from convnext_t, "),
    (['--models', 'upernet_ravlt_s'], "unknown backbone 'upernet_ravlt_s' ('upernet_ravlt_s' is "
     'a model: add --level model)'),
    (['--models', 'no_such_module:net'], "cannot import 'no_such_module:net' "
     "(ModuleNotFoundError: No module named 'no_such_module')"),
    (['--sizes', '224', '100'], '100 is not a multiple of 32, the stride of the last stage '
     '(its map would be 3.125 pixels wide); take 96 or 128'),
    (['--sizes', '16'], '16 is below the minimum of 32 pixels'),
    (['--sizes', '224x250'], '250 is not a multiple of 32'),
    (['--sizes', 'big'], "'big' is not a size: give N (N x N) or HxW"),
    (['--fit-last', '1'], '--fit-last must be at least 2'),
])
def test_bad_input_is_named_and_nothing_is_written(sweep_tool, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        sweep_tool.main(argv + ['--work-dir', str(tmp_path / 'out')])
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
