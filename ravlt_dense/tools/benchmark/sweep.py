"""How latency and peak memory grow with the input size: backbones or whole models, one log-log
plot with each model's fitted slope, and where the curves cross.

    python tools/analysis/resolution_sweep.py [--level backbone|model] [--models ravlt_s ...]
        [--sizes 224 512 ... 4096] [--max-latency 120] [--max-memory-gb 8] [--fit-last 3]
        [--device cpu|cuda] [--dtype float32] [--repeat 3] [--warmup 1]
        [--work-dir work_dirs/resolution] [--plot PATH] [--from-csv resolution_backbone.csv]

Every (model, size) is one case of the benchmark (its own process, batch 1, inference, median
of ``--repeat`` passes after the first), run size by size with every model at one size before
the next size, so that the machine's load drifts alike over all models. A model
whose forward pass takes longer than ``--max-latency`` seconds, or whose process holds more than
``--max-memory-gb`` (CPU: resident memory; CUDA: torch's share of the GPU), is stopped and marked
at that size, and its larger sizes are marked as not run; the sweep goes on with the others.
Where a model holds RAVLT, one more pass with timing hooks gives each stage's share of the
forward and the share of its softmax attention (``case.forward_shares``).

Writes resolution_<level>.md (tables: latency, memory, ratios to Swin-T and where they cross,
RAVLT's stage shares, the fitted slopes), resolution_<level>.csv and the plot to the work dir.
Default models: RAVLT-S in the released mix and all-RALA, Swin-T, ConvNeXt-T, ResNet-50 and
PVTv2-b2 (``--level backbone``); UperNet and Mask R-CNN with RAVLT-S in both mixes and with
Swin-T (``--level model``). ``--models`` also takes ``module:factory`` (any importable callable
that builds a network from the input's (H, W)).
"""
import argparse
import datetime
import os
import os.path as osp
import platform
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import models, report
from .case import run_isolated

# The deepest stage of every model here (RAVLT, Swin, ResNet, ConvNeXt, PVTv2) has stride 32:
# each side must be a multiple of it for every stage's map to tile the image exactly (FPN and
# UperNet add their upsampled maps to the finer ones, which fails otherwise).
STRIDE = 32
DEFAULT_SIZES = (224, 512, 768, 1024, 1536, 2048, 3072, 4096)
DEFAULT_MODELS = {
    'backbone': ('ravlt_s', 'ravlt_s_rala', 'swin_t', 'convnext_t', 'r50', 'pvtv2_b2'),
    'model': ('upernet_ravlt_s', 'upernet_ravlt_s_rala', 'upernet_swin_t', 'maskrcnn_ravlt_s',
              'maskrcnn_ravlt_s_rala', 'maskrcnn_swin_t'),
}
SHARE = 0.5  # "dominates": more than half of the forward's time
# Ahead of Swin-T: faster or lighter by more than this (closer is a tie: the noise of one run)
MARGIN = 0.05


def parse_size(text: str) -> Tuple[int, int]:
    """'1024' (square) or '800x1216' (H x W) -> (H, W); argparse's error names what is wrong."""
    match = re.fullmatch(r'(\d+)(?:x(\d+))?', text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f'{text!r} is not a size: give N (N x N) or HxW')
    h = int(match.group(1))
    w = int(match.group(2) or h)
    for side in (h, w):
        if side < STRIDE:
            raise argparse.ArgumentTypeError(
                f'{text}: {side} is below the minimum of {STRIDE} pixels (the last stage has '
                f'stride {STRIDE}: its map would be empty)')
        if side % STRIDE:
            lower, upper = side // STRIDE * STRIDE, (side // STRIDE + 1) * STRIDE
            raise argparse.ArgumentTypeError(
                f'{text}: {side} is not a multiple of {STRIDE}, the stride of the last stage '
                f'(its map would be {side / STRIDE:g} pixels wide); take '
                + (f'{lower} or {upper}' if lower else f'{upper}'))
    return h, w


def size_name(shape) -> str:
    h, w = shape
    return f'{h}x{w}'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--level', choices=['backbone', 'model'], default='backbone',
                   help='backbones alone, or whole detectors / segmentors (tensor mode)')
    p.add_argument('--models', nargs='+', help='registry names (backbones: '
                   + ' '.join(models.known_names('backbone')) + '; models: '
                   + ' '.join(models.known_names('model')) + ') or module:factory; default: '
                   + '; '.join(f'{k}: {" ".join(v)}' for k, v in DEFAULT_MODELS.items()))
    p.add_argument('--sizes', nargs='+', type=parse_size, metavar='N|HxW',
                   default=[(s, s) for s in DEFAULT_SIZES],
                   help=f'input sizes, multiples of {STRIDE} (default: '
                   + ' '.join(map(str, DEFAULT_SIZES)) + ')')
    p.add_argument('--max-latency', type=float, default=120., metavar='SECONDS',
                   help='time budget: a forward pass running longer stops the model there')
    p.add_argument('--max-memory-gb', type=float, default=8., metavar='GB',
                   help='memory budget of a case\'s process (CPU: resident memory, watched by '
                   'the parent; CUDA: the share of the GPU torch may use)')
    p.add_argument('--fit-last', type=int, default=3, metavar='N',
                   help="fit each model's slope over its N largest sizes measured")
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', choices=['float32', 'float16', 'bfloat16'], default='float32',
                   help='autocast dtype (CUDA; CPU stays float32)')
    p.add_argument('--repeat', type=int, default=3, help='timed passes per size')
    p.add_argument('--warmup', type=int, default=1, help='untimed passes first (the first '
                   'measures the peak memory)')
    p.add_argument('--timeout', type=float, default=3600,
                   help='seconds per case, start-up included (a safety net: --max-latency is '
                   'the budget)')
    p.add_argument('--work-dir', default='work_dirs/resolution')
    p.add_argument('--plot', help='where the figure goes (default: '
                   'WORK_DIR/resolution_<level>.png)')
    p.add_argument('--from-csv', help='measure nothing: re-render the tables and plot from a '
                   'resolution_<level>.csv of an earlier sweep')
    args = p.parse_args(argv)
    args.sizes = sorted(set(map(tuple, args.sizes)), key=lambda s: (s[0] * s[1], s))
    if args.max_latency <= 0 or args.max_memory_gb <= 0:
        p.error('--max-latency and --max-memory-gb must be positive')
    if args.fit_last < 2:
        p.error('--fit-last must be at least 2 (a slope needs two sizes)')
    if args.repeat < 1 or args.warmup < 1:
        p.error('--repeat and --warmup must be >= 1')
    if args.device.startswith('cpu') and args.dtype != 'float32':
        p.error('--dtype float16/bfloat16 is for CUDA; the CPU sweep is float32')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda but torch.cuda.is_available() is False (use --device cpu)')
    args.models = args.models or default_models(args.level)
    if not args.from_csv:
        for name in args.models:
            why = unusable(name, args.level)
            if why:
                p.error(why)
    return args


def default_models(level: str) -> List[str]:
    """DEFAULT_MODELS[level], ConvNeXt-T as timm builds it where mmpretrain is missing and timm
    is not (the same network; where neither is, the report says so)."""
    names = list(DEFAULT_MODELS[level])
    if ('convnext_t' in names and models.missing_requirement('convnext_t', level)
            and not models.missing_requirement('convnext_t_timm', level)):
        names[names.index('convnext_t')] = 'convnext_t_timm'
    return names


def unusable(name: str, level: str) -> Optional[str]:
    """Why ``name`` is no model at ``level`` (an unknown name, a factory that does not import),
    or None. A known model whose packages are missing is not an error: the sweep notes it."""
    if models.is_factory(name):
        return models.missing_requirement(name, level)
    if name not in models.known_names(level):
        other = 'model' if level == 'backbone' else 'backbone'
        hint = (f' ({name!r} is a {other}: add --level {other})'
                if name in models.known_names(other) else '')
        return (f'unknown {level} {name!r}{hint}; choose from '
                + ', '.join(models.known_names(level)) + ', or give module:factory')
    return None


def case_spec(name: str, shape, args) -> dict:
    """One (model, size) as a case of the benchmark: batch-1 inference, RAVLT's fast path,
    no FLOPs (tracing a 4096x4096 forward takes longer than timing it), the stage profile."""
    return dict(name=name, level=args.level, shape=shape, batches=[1], train_batch=0,
                device=args.device, dtype=args.dtype, warmup=args.warmup, repeat=args.repeat,
                flops=False, compile=None, profile=True,
                path='fast' if models.has_rala(name, args.level) else None,
                max_pass_s=args.max_latency, max_memory_gb=args.max_memory_gb)


def sweep(args, save: Callable[[List[dict]], None] = lambda rows: None
          ) -> Tuple[List[dict], List[str]]:
    """Every model at every size, smallest size first; a model stopped or failed at one size is
    not run at the larger ones (rows saying so). ``save(rows)`` after each case: an hour-long
    sweep cut short keeps what it measured."""
    notes, names, ended = [], list(dict.fromkeys(args.models)), {}
    for name in names:
        why = models.missing_requirement(name, args.level)
        if why:  # a row per size still, saying why: the tables show the model was asked for
            notes.append(f'- skipped `{name}`: {why}')
            ended[name] = why
    rows, start = [], time.monotonic()
    cases = [(shape, name) for shape in args.sizes for name in names]
    print(f'{len(cases)} cases: {len(names)} models x {len(args.sizes)} sizes, time budget '
          f'{args.max_latency:g} s per forward pass, memory budget {args.max_memory_gb:g} GB',
          flush=True)
    for i, (shape, name) in enumerate(cases, 1):
        spec = case_spec(name, shape, args)
        if name in ended:
            got = run_isolated(spec, 0, ended[name])
        else:
            got = run_isolated(spec, args.timeout)
            note = next((r['note'] for r in got if r.get('note')), '')
            if note:
                what = 'over budget' if note.startswith('stopped: over') else 'failed'
                ended[name] = f'{what} at {size_name(shape)}'
        rows += got
        save(rows)
        print(f'[{time.monotonic() - start:6.0f} s] {i}/{len(cases)} '
              f'{models.description(name, args.level)} {size_name(shape)}: '
              + progress(got[-1]), flush=True)
    return rows, notes


def progress(row: dict) -> str:
    if 'latency_ms' not in row:
        return row.get('note', '')
    text = f"{row['latency_ms']:,.0f} ms, {row['peak_mem_MB']:,.0f} MB"
    if isinstance(row.get('share_s3_softmax'), float):
        text += f", stage-3 softmax {row['share_s3_softmax']:.0%} of the forward"
    return text


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------
def by_model(rows: List[dict]) -> Dict[str, Dict[str, dict]]:
    """label -> input -> its row, in the order measured."""
    out = {}
    for r in rows:
        out.setdefault(report.label(r), {})[r['input']] = r
    return out


def inputs_of(rows: List[dict]) -> List[str]:
    """The sizes of the sweep, smallest first."""
    pixels = {r['input']: r['pixels'] for r in rows}
    return sorted(pixels, key=lambda s: pixels[s])


def cell(row: Optional[dict], key: str, fmt: Callable[[float], str]) -> str:
    """A value, or what happened instead (stopped by a budget, failed, not run)."""
    if row is None:
        return ''
    if isinstance(row.get(key), (int, float)):
        return fmt(row[key])
    note = row.get('note', '')
    for budget in ('time', 'memory'):
        if f'{budget} budget' in note:
            return f'**over {budget} budget**'
    if note.startswith('not run'):
        return 'not run'
    return 'failed' if note else '–'


def value_table(rows, key, fmt, fits, title_unit) -> List[str]:
    sizes = inputs_of(rows)
    lines = ['| model | ' + ' | '.join(sizes) + f' | slope ({title_unit}) |',
             '|---|' + '---|' * (len(sizes) + 1)]
    for name, per_size in by_model(rows).items():
        slope = '–'
        if name in fits:
            value, pixels = fits[name]
            slope = f'{value:.2f} ({side(min(pixels))}–{side(max(pixels))})'
        lines.append(f'| {name} | ' + ' | '.join(cell(per_size.get(s), key, fmt) for s in sizes)
                     + f' | {slope} |')
    return lines


def fit_range(fits: Dict[str, tuple]) -> str:
    """The sizes the slopes were fitted over, as one phrase when all models share them."""
    spans = {(min(p), max(p), len(p)) for _, p in fits.values()}
    if not spans:
        return 'not fitted: no model was measured at two sizes'
    if len(spans) == 1:
        lo, hi, n = spans.pop()
        return f'fitted over the {n} largest sizes measured, {size_of(lo)} to {size_of(hi)}'
    most = max(len(p) for _, p in fits.values())
    return (f'fitted over each model\'s {most} largest sizes measured (fewer where it has '
            'fewer), from and to the sizes in brackets')


def size_of(pixels: int) -> str:
    return f'{side(pixels)}x{side(pixels)}' if side(pixels).isdigit() else side(pixels)


def side(pixels: int) -> str:
    """The side of a square of ``pixels`` ('1024'), else the pixel count ('1,228,800 px')."""
    n = int(round(pixels**0.5))
    return str(n) if n * n == pixels else f'{pixels:,} px'


def baseline_of(name: str, level: str, measured) -> Optional[str]:
    """The Swin-T model a row is compared with: Swin-T itself for backbones, the same head with
    Swin-T for whole models (maskrcnn_ravlt_s -> maskrcnn_swin_t)."""
    if level == 'backbone':
        return models.baseline(measured)
    head = name.split('_')[0]
    twin = f'{head}_swin_t'
    return twin if twin in measured and twin != name else None


def for_good(sizes: List[str], holds: Dict[str, bool]) -> Optional[str]:
    """The smallest size from which ``holds`` is True at every larger size compared."""
    compared = [s for s in sizes if s in holds]
    start = None
    for s in compared:
        if holds[s] and start is None:
            start = s
        elif not holds[s]:
            start = None
    return start


def crossover_lines(rows: List[dict], level: str) -> List[str]:
    """Latency and memory of each model over its Swin-T twin's, size by size, and from which
    size it is faster / lighter for good (or that it is not up to the largest size both ran)."""
    measured = {r['model'] for r in rows if 'latency_ms' in r}
    sizes = inputs_of(rows)
    table, answers = [], []
    for name, per_size in by_model(rows).items():
        model = next(iter(per_size.values()))['model']
        base = baseline_of(model, level, measured)
        if base is None or base == model:
            continue
        theirs = {r['input']: r for r in rows if r['model'] == base and 'latency_ms' in r}
        ours = {s: r for s, r in per_size.items() if 'latency_ms' in r and s in theirs}
        if not ours:
            continue
        speed = {s: theirs[s]['latency_ms'] / r['latency_ms'] for s, r in ours.items()}
        memory = {s: r['peak_mem_MB'] / max(theirs[s]['peak_mem_MB'], 1e-9)
                  for s, r in ours.items()}
        table.append(f'| {name} | ' + ' | '.join(
            f'{speed[s]:.2f}x / {memory[s]:.2f}x' if s in ours else '' for s in sizes) + ' |')
        largest = max(ours, key=lambda s: ours[s]['pixels'])
        base_name = report.label(next(iter(theirs.values())))
        for what, ratios, better in (('time', speed, lambda v: v > 1 + MARGIN),
                                     ('memory', memory, lambda v: v < 1 - MARGIN)):
            start = for_good(sizes, {s: better(v) for s, v in ratios.items()})
            if start is None:
                answers.append(f'- {name} against {base_name}, {what}: not ahead up to '
                               f'{largest}, the largest size both measured '
                               f'({ratios[largest]:.2f}x there).')
            else:
                first = 'at every size measured' if start == min(
                    ours, key=lambda s: ours[s]['pixels']) else f'from {start} on'
                at = [start] + ([largest] if largest != start else [])
                answers.append(f'- {name} against {base_name}, {what}: ahead {first} ('
                               + ', '.join(f'{ratios[s]:.2f}x at {s}' for s in at) + ').')
    if not table:
        return []
    return (['## Against Swin-T (same run)', '',
             'Speed / memory against Swin-T at each size: Swin-T\'s latency over ours (above 1: '
             'faster than Swin-T), our peak memory over Swin-T\'s (below 1: less memory).'
             + (' Whole models are compared with the same head on Swin-T.'
                if level == 'model' else ''), '',
             '| model | ' + ' | '.join(sizes) + ' |', '|---|' + '---|' * len(sizes)]
            + table + ['', f'Where each overtakes Swin-T (ahead by more than {MARGIN:.0%} at '
                       'that size and every larger one both measured):', ''] + answers + [''])


def share_lines(rows: List[dict]) -> List[str]:
    """RAVLT's per-stage profile: each stage's share of the forward and the share of the
    softmax attention in stages 3 and 4, and from which size stage 3's softmax is more than
    half of the forward."""
    profiled = [r for r in rows if isinstance(r.get('share_s3'), (int, float))]
    if not profiled:
        return []
    order = list(by_model(rows))
    profiled.sort(key=lambda r: (order.index(report.label(r)), r['pixels']))
    whole = profiled[0].get('level') == 'model'
    keys = ('share_stem', 'share_s1', 'share_s2', 'share_s3', 'share_s4', 'share_s3_softmax',
            'share_s4_softmax')
    lines = ['## Where the time goes in RAVLT', '',
             'Share of the forward pass' + (' of the whole model' if whole else '')
             + ' in the stem and each stage, and in the softmax attention of stages 3 and 4 '
             '(their `F.scaled_dot_product_attention` calls: the attention products and the '
             'softmax, not the projections around them), from one more pass with timing hooks '
             'after the timed ones. RALA stages have no softmax (–).', '',
             '| model | input | stem | stage 1 | stage 2 | stage 3 | stage 4 | stage-3 softmax '
             '| stage-4 softmax |', '|---|---|---|---|---|---|---|---|---|']
    for r in profiled:
        lines.append(f"| {report.label(r)} | {r['input']} | " + ' | '.join(
            f'{r[k]:.0%}' if isinstance(r.get(k), (int, float)) else '–' for k in keys) + ' |')
    lines.append('')
    sizes = inputs_of(rows)
    for name, per_size in by_model(profiled).items():
        shares = {s: r['share_s3_softmax'] for s, r in per_size.items()
                  if isinstance(r.get('share_s3_softmax'), (int, float))}
        if not shares:
            continue
        start = for_good(sizes, {s: v > SHARE for s, v in shares.items()})
        largest = max(shares, key=lambda s: per_size[s]['pixels'])
        said = (f'more than half of the forward from {start} on' if start else
                f'less than half of the forward up to {largest}, the largest size measured')
        lines.append(f"- {name}: stage 3's softmax attention takes {said} ("
                     + ', '.join(f'{v:.0%} at {s}' for s, v in shares.items()) + ').')
    return lines + ['']


def commit() -> str:
    """The clone's commit, and whether its files differ from it (the figures are of these)."""
    try:
        git = ['git', '-C', str(models.REPO)]
        sha = subprocess.run(git + ['rev-parse', '--short', 'HEAD'], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(git + ['status', '--porcelain', '--untracked-files=no'],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return (sha or 'unknown') + (' with local changes' if dirty else '')


def render(rows: List[dict], notes: List[str], args, elapsed: float,
           fits: Dict[str, Dict[str, tuple]], plot_line: str) -> List[str]:
    measured = [r for r in rows if 'latency_ms' in r]
    device = measured[0]['device'] if measured else args.device
    budget = (f'{args.max_latency:g} s per forward pass, {args.max_memory_gb:g} GB per case'
              + (' (resident memory of its process)' if not device.startswith('cuda')
                 else " (torch's share of the GPU)"))
    lines = [f'# Growth with resolution ({args.level}s), {datetime.datetime.now():%Y-%m-%d %H:%M}',
             '', f"Command: `python {' '.join(sys.argv)}` ({elapsed:.0f} s)  ",
             f'Device: {device}; torch {torch.__version__}, Python '
             f'{platform.python_version()}; commit {commit()}  ',
             f'Budget: {budget}; a model over it is stopped at that size (bold) and not run '
             'at larger ones.', '']
    for key, title, unit, fmt in (
            ('latency_ms', 'Latency (ms, median)', 'latency', lambda v: f'{v:,.0f}'),
            ('peak_mem_MB', 'Peak memory (MB)', 'memory', lambda v: f'{v:,.0f}')):
        lines += [f'## {title}', ''] + value_table(rows, key, fmt, fits[key], unit) + [
            '', f'Slope: of log({unit}) against log(pixels), '
            + fit_range(fits[key]) + ' (1 = linear in pixels, 2 = quadratic).', '']
    lines += crossover_lines(rows, args.level)
    lines += share_lines(rows)
    lines += ['- Latency: batch 1, inference (`torch.inference_mode`, eval), median of the '
              'timed passes after the first; RAVLT on its fast path.',
              '- Peak memory: extra memory of the first pass over what model and input held '
              'before, one process per case (CPU: resident set high-water mark; CUDA: '
              '`max_memory_allocated`).']
    if args.level == 'model':
        lines.append('- Whole models in "tensor" mode (the network without post-processing, '
                     'as get_flops): Mask R-CNN = backbone, FPN, RPN with proposal NMS, box '
                     'head on all proposals, mask head on the first 100; UperNet = backbone and '
                     'decode head with its auxiliary FCN head.')
    lines.append(plot_line)
    if notes:
        lines += ['', 'Notes:'] + notes
    return lines


def plot(rows: List[dict], path: str, fits, args) -> Optional[str]:
    measured = [r for r in rows if 'latency_ms' in r]
    if not measured:
        return 'nothing was measured: no plot'
    stopped = {report.label(r): f"over {'time' if 'time budget' in r['note'] else 'memory'} "
               f"budget at {r['input']}" for r in rows
               if r.get('note', '').startswith('stopped: over')}

    def legend(line, slope):
        text = line + ('' if slope is None else f': slope {slope:.2f}')
        return text + (f'; {stopped[line]}' if line in stopped else '')

    panels = [(key, axis, {k: s for k, (s, _) in fits[key].items()})
              for key, axis in (('latency_ms', 'median latency (ms)'),
                                ('peak_mem_MB', 'peak memory (MB)'))]
    what = 'backbones' if args.level == 'backbone' else 'whole models'
    title = (f"Growth with resolution, {what}, batch 1 ({measured[0]['device']}); slopes "
             f'fitted over each model\'s {args.fit_last} largest sizes measured')
    return report.plot_loglog(measured, path, panels, title, name=report.label, legend=legend,
                              dpi=80, panel_size=(6.4, 5.2))


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    if args.from_csv:
        rows = report.read_csv(args.from_csv)
        args.level = rows[0].get('level', args.level) if rows else args.level
    os.makedirs(args.work_dir, exist_ok=True)
    stem = osp.join(args.work_dir, f'resolution_{args.level}')
    paths = dict(md=stem + '.md', csv=stem + '.csv', png=args.plot or stem + '.png')

    def save(rows):
        report.write_csv(rows, paths['csv'], report.COLUMNS + report.SHARE_COLUMNS)
    if args.from_csv:
        notes = [f'- rendered from `{args.from_csv}` (an earlier sweep)']
        if osp.abspath(paths['csv']) != osp.abspath(args.from_csv):
            save(rows)
    else:
        rows, notes = sweep(args, save)
    measured = [r for r in rows if 'latency_ms' in r]
    fits = {key: report.fitted_slopes(measured, key, args.fit_last, name=report.label)
            for key in ('latency_ms', 'peak_mem_MB')}
    why_not = plot(rows, paths['png'], fits, args)
    lines = render(rows, notes, args, time.monotonic() - start, fits,
                   f'- {why_not}' if why_not else f"- Plot: `{paths['png']}`")
    text = '\n'.join(lines) + '\n'
    report.write_text(paths['md'], text)
    print(text)
    print('wrote ' + ', '.join(p for k, p in paths.items() if k != 'png' or not why_not))
    return rows
