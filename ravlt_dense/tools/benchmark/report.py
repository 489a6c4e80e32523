"""The reports of the benchmark and the resolution sweep: CSV in and out, the table of every row,
the summary with each model's ratios to Swin-T, the log-log scaling fit and plot."""
import csv
import importlib.util
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .models import baseline as pick_baseline

COLUMNS = ['model', 'description', 'level', 'path', 'task', 'mode', 'input', 'pixels',
           'batch', 'device', 'dtype', 'params_M', 'flops_full_G', 'flops_modules_G',
           'flops_attn_products_G', 'latency_ms', 'latency_q1_ms', 'latency_q3_ms',
           'latency_min_ms', 'latency_max_ms', 'images_per_s', 'peak_mem_MB', 'mem_kind',
           'repeat', 'compile_s', 'speedup_vs_eager', 'uncounted_ops', 'note']
# Where a RAVLT forward spends its time (case.forward_shares), as fractions
SHARE_COLUMNS = ['share_stem'] + [f'share_s{i}{part}' for i in range(1, 5)
                                  for part in ('', '_softmax')]
INTS = ('pixels', 'batch', 'repeat')


def replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary name)``, then rename it to ``path``: a reader never sees half a file,
    and a failed write leaves the old one."""
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """``text`` into ``path``, whole or not at all (:func:`replace_atomically`)."""
    def write(name):
        with open(name, 'w') as f:
            f.write(text)
    replace_atomically(path, write)


def write_csv(rows: List[dict], path: str, columns: List[str] = COLUMNS) -> None:
    def write(name):
        with open(name, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, '') for k in columns})
    replace_atomically(path, write)


def read_csv(path: str) -> List[dict]:
    """Rows written by ``write_csv``, numbers parsed back (empty cells dropped)."""
    rows = []
    with open(path, newline='') as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if value == '':
                    continue
                try:
                    row[key] = int(value) if key in INTS else float(value)
                except ValueError:
                    row[key] = value
            rows.append(row)
    return rows


def _fmt(value, digits=1) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return '–'
    return f'{value:,.{digits}f}'


def label(row: dict) -> str:
    """The model as the tables name it: its description and, for RAVLT, a path other than fast."""
    path = {'fast-nokernel': ', no RALA kernel', 'reference': ', reference path'}
    return row['description'] + path.get(row.get('path'), '')


def series(row: dict) -> str:
    """Rows that differ only in their input shape: one line of the scaling plot."""
    return (f"{label(row)}, {row.get('task', 'inference')} {row.get('mode', 'eager')} "
            f"b{row.get('batch', 1)}")


def points(rows: List[dict], key: str,
           name: Callable[[dict], str] = series) -> Dict[str, list]:
    """Per series (``name`` of a row), its (pixels, ``key``) points where ``key`` was measured,
    by pixels."""
    out = {}
    for r in rows:
        if isinstance(r.get(key), (int, float)) and r[key] > 0:
            out.setdefault(name(r), []).append((r['pixels'], r[key]))
    return {line: sorted(pts) for line, pts in out.items()}


def fitted_slopes(rows: List[dict], key: str, last: int = 2,
                  name: Callable[[dict], str] = series) -> Dict[str, Tuple[float, list]]:
    """Per series (``name`` of a row), the least-squares slope of log(``key``) against
    log(pixels) over its ``last`` largest shapes measured, and those shapes' pixel counts:
    1 = linear in pixels, 2 = quadratic. Series with fewer than two pixel counts have none."""
    fits = {}
    for line, pts in points(rows, key, name).items():
        pts = pts[-last:]
        xs = [math.log(p) for p, _ in pts]
        ys = [math.log(v) for _, v in pts]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mean_x)**2 for x in xs)
        if var > 0:
            cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
            fits[line] = (cov / var, [p for p, _ in pts])
    return fits


def scaling_slopes(rows: List[dict], key: str) -> Dict[str, float]:
    """log-log slope of ``key`` against pixels between each series' two largest shapes:
    1 = linear in pixels, 2 = quadratic."""
    return {name: slope for name, (slope, _) in fitted_slopes(rows, key).items()}


def markdown_table(rows: List[dict]) -> str:
    """Every row measured (or the note saying why not)."""
    head = ('| model | task | mode | input | batch | params (M) | FLOPs full (G) | '
            'FLOPs modules-only (G) | latency median (ms) | IQR (ms) | min–max (ms) | img/s | '
            'peak mem (MB) | device |')
    lines = [head, '|' + '---|' * head.count(' | ') + '---|']
    for r in rows:
        start = (f"| {label(r)} | {r.get('task', '–')} | {r.get('mode', '–')} | {r['input']} | "
                 f"{r.get('batch', '–')} |")
        if 'latency_ms' not in r:
            lines.append(start + ' – |' * 8 + f" {r['device']} ({r.get('note', '')}) |")
            continue
        lines.append(
            f"{start} {_fmt(r.get('params_M'), 2)} | "
            f"{_fmt(r.get('flops_full_G'), 2)} | {_fmt(r.get('flops_modules_G'), 2)} | "
            f"{_fmt(r['latency_ms'], 1)} | {_fmt(r['latency_q1_ms'], 1)}–"
            f"{_fmt(r['latency_q3_ms'], 1)} | {_fmt(r['latency_min_ms'], 1)}–"
            f"{_fmt(r['latency_max_ms'], 1)} | {_fmt(r['images_per_s'], 2)} | "
            f"{_fmt(r['peak_mem_MB'], 0)} | {r['device']} {r['dtype']} |")
    return '\n'.join(lines)


# The summary's metrics: (key, header, pick the row, value of the row, higher is better)
def _metrics(rows: List[dict]):
    infer = [r for r in rows if r.get('task') == 'inference' and 'latency_ms' in r]
    big = max((r['batch'] for r in infer), default=1)
    small = min((r['batch'] for r in infer), default=1)
    train = [r['batch'] for r in rows if r.get('task') == 'train' and 'latency_ms' in r]
    tb = train[0] if train else 2
    return [
        ('inference', f'inference b{big} (img/s)',
         lambda r: r.get('task') == 'inference' and r.get('mode') == 'eager'
         and r.get('batch') == big, 'images_per_s', True),
        ('latency', f'latency b{small} (ms)',
         lambda r: r.get('task') == 'inference' and r.get('mode') == 'eager'
         and r.get('batch') == small, 'latency_ms', False),
        ('train', f'train step b{tb} (ms)', lambda r: r.get('task') == 'train', 'latency_ms',
         False),
        ('compiled', f'compiled b{big} (img/s)',
         lambda r: r.get('mode') == 'compiled', 'images_per_s', True),
        ('train_peak', f'train peak b{tb} (MB)', lambda r: r.get('task') == 'train',
         'peak_mem_MB', False),
    ]


def summary_rows(rows: List[dict], baseline: Optional[str] = None) -> List[dict]:
    """One row per (model, path, input): each metric of ``_metrics`` and its ratio to the
    baseline's in the same run (>1 = better for speed; memory: ours / theirs). The baseline
    is by default the first of ``models.BASELINES`` among the rows."""
    baseline = baseline or pick_baseline(r['model'] for r in rows)
    metrics = _metrics(rows)
    out = []
    keys = dict.fromkeys((r['model'], r.get('path', ''), r['input']) for r in rows)
    for model, path, shape in keys:
        mine = [r for r in rows if (r['model'], r.get('path', ''), r['input'])
                == (model, path, shape) and 'latency_ms' in r]
        theirs = [r for r in rows if r['model'] == baseline and r['input'] == shape
                  and 'latency_ms' in r]
        first = next((r for r in rows if (r['model'], r.get('path', ''), r['input'])
                      == (model, path, shape)), {})
        row = dict(model=model, label=label(first), path=path, input=shape,
                   device=first.get('device', ''), dtype=first.get('dtype', ''))
        for key, _, pick, value, higher in metrics:
            own = next((r[value] for r in mine if pick(r)), None)
            ref = next((r[value] for r in theirs if pick(r)), None)
            row[key] = own
            if own and ref:
                row[key + '_ratio'] = own / ref if (higher or key == 'train_peak') else ref / own
        out.append(row)
    return out


def summary_columns(rows: List[dict]) -> List[str]:
    cols = ['model', 'label', 'path', 'input', 'device', 'dtype']
    for key, *_ in _metrics(rows):
        cols += [key, key + '_ratio']
    return cols


def summary_table(rows: List[dict], baseline: Optional[str] = None) -> str:
    """The summary as Markdown: value (ratio to the baseline) per metric measured."""
    summary = summary_rows(rows, baseline)
    metrics = [m for m in _metrics(rows) if any(s.get(m[0]) is not None for s in summary)]
    head = '| model | input | ' + ' | '.join(m[1] for m in metrics) + ' |'
    lines = [head, '|' + '---|' * (len(metrics) + 2)]
    for s in summary:
        cells = []
        for key, *_ in metrics:
            value, ratio = s.get(key), s.get(key + '_ratio')
            digits = 0 if key == 'train_peak' else 1
            cells.append(_fmt(value, digits) + (f' ({ratio:.2f}x)' if ratio else ''))
        lines.append(f"| {s['label']} | {s['input']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_scaling(rows: List[dict], path: str) -> Optional[str]:
    """Log-log latency, memory and full FLOPs against pixel count, one line per series, with
    slope-1 and slope-2 guides. Returns None on success or why no plot was made."""
    panels = [(key, name, scaling_slopes(rows, key))
              for key, name in (('latency_ms', 'median latency (ms)'),
                                ('peak_mem_MB', 'peak memory (MB)'),
                                ('flops_full_G', 'FLOPs, full count (G)'))]
    panels = [p for p in panels if p[2]]  # only quantities some series has at two shapes
    if not panels:
        return 'no model was measured at two shapes: no scaling plot'
    return plot_loglog(rows, path, panels,
                       title=f"Scaling with input size ({rows[0].get('device', '')})")


def plot_loglog(rows: List[dict], path: str,
                panels: Sequence[Tuple[str, str, Dict[str, float]]], title: str,
                name: Callable[[dict], str] = series,
                legend: Callable[[str, Optional[float]], str] = None, dpi: int = 120,
                panel_size: Tuple[float, float] = (6.5, 6)) -> Optional[str]:
    """One log-log panel per (key, axis label, {series: slope}) against pixels, one line per
    series (``name`` of a row; dashed: all-RALA), slope-1 and slope-2 guides, the slope in each
    line's legend entry (``legend(series, slope)`` words it). Written whole to ``path`` (PNG).
    Returns None on success or why no plot was made."""
    if importlib.util.find_spec('matplotlib') is None:
        return 'matplotlib is not installed: no plot (add matplotlib to requirements/stack.txt)'
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    legend = legend or (lambda line, slope: line + ('' if slope is None
                                                      else f' (slope {slope:.2f})'))
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(panel_size[0] * len(panels), panel_size[1]))
    colors = plt.get_cmap('tab10').colors
    lines = list(dict.fromkeys(map(name, rows)))  # a series keeps its colour in every panel
    for ax, (key, axis, slopes) in zip(axes[0], panels):
        by_series = points(rows, key, name)
        for line, pts in by_series.items():
            style = '--' if 'all-RALA' in line else '-'
            ax.plot(*zip(*pts), style, marker='o',
                    color=colors[lines.index(line) % len(colors)],
                    label=legend(line, slopes.get(line)))
        values = [pt for pts in by_series.values() for pt in pts]
        ax.set_xscale('log')
        ax.set_yscale('log')
        if len({p for p, _ in values}) > 1:
            lo, hi = min(p for p, _ in values), max(p for p, _ in values)
            ref = min(v for p, v in values if p == lo)
            ylim = ax.get_ylim()  # the guides start at the lowest point and end at the top
            for power, ls in ((1, ':'), (2, '-.')):
                ax.plot([lo, hi], [ref, ref * (hi / lo)**power], ls, color='grey',
                        label=f'slope {power} ({"linear" if power == 1 else "quadratic"})')
            ax.set_ylim(ylim)
        ax.set_xlabel('pixels per image (H x W)')
        ax.set_ylabel(axis)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format='png'))
    plt.close(fig)
    return None
