"""Published accuracy against cost measured here: RAVLT and the backbones that mmdet and mmseg
publish under the same heads (Swin, ResNet, ConvNeXt, PVTv2, Twins-PCPVT).

    python tools/analysis/accuracy_cost.py [--models ravlt_t swin_t ...]
        [--benchmarks maskrcnn_1x maskrcnn_3x retinanet_1x upernet_160k fpn_80k]
        [--shape 800 1216] [--repeat 3] [--warmup 1] [--threads N] [--device cpu]
        [--no-latency] [--metafile configs/metafile.yml] [--costs-from CSV]
        [--out-dir work_dirs/accuracy_cost]

Published: each accuracy is read from a metafile (ravlt_dense.tools.analysis.accuracy): RAVLT's from
the zoo's (or ``--metafile``), the others' from the installed mmdet's and mmseg's model-index,
matched by head, dataset and schedule.
Measured here, for the backbone alone (the part that differs between the rows of a benchmark;
the heads are the same): parameters, FLOPs counted two ways (ravlt_dense.tools.analysis: full =
traced, attention products included; modules only, as the paper counts) and the latency of one
image at ``--shape`` (eval, ``torch.inference_mode``, fp32). Backbones are built as
tools/analysis/benchmark.py builds them; the others from the backbone of their published
config; ConvNeXt needs mmpretrain (else timm's identical network). All models are timed in one
process, in turn, round after round (``timing.interleaved_seconds``): the load of a shared
machine hits all alike; the latency is the median of ``--repeat`` rounds after ``--warmup``.
(tools/analysis/benchmark.py measures each model in a process of its own, peak memory too.)
``--costs-from`` re-draws an earlier run's costs against the metafiles as they are now.

Writes accuracy_cost.png (a row of panels per benchmark: accuracy against params, FLOPs and
latency), accuracy_cost.md (the tables, what RAVLT buys over Swin-T first) and accuracy_cost.csv
to ``--out-dir``, all rendered before any is written, each file whole.
"""
import argparse
import csv
import datetime
import importlib
import importlib.util
import io
import math
import os
import os.path as osp
import platform
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from ravlt_dense import zoo
from ravlt_dense.tools.analysis import accuracy
from ravlt_dense.tools.benchmark import models
from ravlt_dense.tools.benchmark.timing import device_name, interleaved_seconds, latency_stats
from ravlt_dense.tools.cli import add_shape_argument, parsed_shape
from ravlt_dense.tools.names import package_config

OUTPUTS = ('accuracy_cost.png', 'accuracy_cost.md', 'accuracy_cost.csv')
BASELINE = 'swin_t'  # what the summary compares RAVLT with
# timm's networks where mmpretrain's ConvNeXt (what mmdet's and mmseg's configs use) is missing
TIMM_STANDINS = {'convnext_t': 'convnext_tiny', 'convnext_s': 'convnext_small'}
# marker and colour of each family in the figure
STYLES = {accuracy.RAVLT_FAMILY: ('*', 'tab:red'), 'Swin': ('s', 'tab:blue'),
          'ResNet': ('o', 'tab:gray'), 'ConvNeXt': ('D', 'tab:green'),
          'PVTv2': ('^', 'tab:purple'), 'Twins-PCPVT': ('v', 'tab:orange')}
AXES = {'params_M': 'parameters (M)', 'flops_full_G': 'FLOPs (G, traced, attention incl.)',
        'latency_ms': 'latency (ms, median)'}


def log(start: float, message: str) -> None:
    print(f'[{time.monotonic() - start:6.0f} s] {message}', flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', metavar='NAME',
                   help='models to compare (default: every one with a published accuracy on '
                   'the benchmarks); RAVLT: ravlt_t ravlt_s ravlt_b ravlt_l; others: '
                   + ' '.join(accuracy.PEERS))
    p.add_argument('--benchmarks', nargs='+', choices=list(accuracy.BENCHMARKS),
                   default=list(accuracy.BENCHMARKS), help='head, dataset and schedule: '
                   + '; '.join(f'{k} = {b.title}' for k, b in accuracy.BENCHMARKS.items()))
    add_shape_argument(p, help='the backbone\'s input for the measured costs',
                       default=(800, 1216))
    p.add_argument('--repeat', type=int, default=3, help='timed rounds (median)')
    p.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    p.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s own)')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--no-latency', action='store_true',
                   help='count params and FLOPs only (a quick figure)')
    p.add_argument('--metafile', help='RAVLT\'s metafile (default: the zoo\'s, '
                   'configs/metafile.yml)')
    p.add_argument('--costs-from', metavar='CSV',
                   help='measure nothing: take the costs (and their machine and shape) from '
                   'the accuracy_cost.csv of an earlier run; the accuracies are read anew')
    p.add_argument('--out-dir', default='work_dirs/accuracy_cost')
    args = p.parse_args(argv)
    if args.costs_from and not osp.isfile(args.costs_from):
        p.error(f'--costs-from {args.costs_from}: no such file')
    args.shape = parsed_shape(p, args.shape, minimum=32)
    if args.repeat < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        p.error('--repeat and --threads must be >= 1, --warmup >= 0')
    if args.metafile and not osp.isfile(args.metafile):
        p.error(f'--metafile {args.metafile}: no such file')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda but torch.cuda.is_available() is False (use --device cpu)')
    try:
        accuracy.check_names(args.models or [], list(accuracy.model_names(args.metafile)))
    except ValueError as err:
        p.error(f'--models: {err}')
    return args


# ---------------------------------------------------------------------------- building models
def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def config_backbone(package: str, config: str) -> nn.Module:
    """The backbone of an mmdet / mmseg config (``configs/...`` as its metafile names it),
    random weights."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(package_config(f"{package}::{config.split('configs/', 1)[-1]}"),
                          import_custom_modules=False)  # checked below, with a plain message
    backbone = cfg.model.backbone
    backbone.pop('init_cfg', None)  # no checkpoint: costs do not depend on the weights
    scope = backbone.type.partition('.')[0] if '.' in backbone.type else package
    if not installed(scope):  # e.g. mmpretrain.ConvNeXt: say so, not the registry's trace
        raise ModuleNotFoundError(f'{scope} is not installed (the config\'s backbone is '
                                  f'{backbone.type})')
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    importlib.import_module(f'{package}.utils').register_all_modules(init_default_scope=False)
    return importlib.import_module(f'{package}.registry').MODELS.build(backbone)


def builders(name: str, rows: List[accuracy.Published],
             shape: Sequence[int]) -> List[Tuple[str, Callable[[], nn.Module]]]:
    """The ways to build ``name``'s backbone, best first, each with what it is: the benchmark's
    builder, the backbone of its first published mmdet / mmseg config, timm's twin. A way
    that cannot work here comes as (why not, None)."""
    ways = []
    if name in models.BACKBONES:
        why = models.missing_requirement(name, 'backbone')
        ways.append((why, None) if why else (
            models.description(name, 'backbone'),
            lambda: models.build(name, 'backbone', 1, tuple(shape))))
    else:
        row = next((r for r in rows if r.model == name and r.source in accuracy.PACKAGES), None)
        if row is not None:
            ways.append((f'backbone of {row.source}::{row.config.split("configs/", 1)[-1]}',
                         lambda: config_backbone(row.source, row.config)))
    if name in TIMM_STANDINS:
        timm_name = TIMM_STANDINS[name]
        if installed('timm'):
            ways.append((f"timm's {timm_name} (the same network)",
                         lambda: models._timm(timm_name)(tuple(shape)).eval()))
        else:
            ways.append((f'timm is not installed (for {timm_name})', None))
    return ways


def build_models(names, rows, shape, device, start) -> Tuple[Dict[str, tuple], Dict[str, str]]:
    """``({name: (model, built as)}, {name: why skipped})``."""
    built, skipped = {}, {}
    for name in names:
        reasons = []
        for how, build in builders(name, rows, shape):
            if build is None:
                reasons.append(how)
                continue
            try:
                model = build()
            except Exception as err:  # a missing package, an op mmcv lacks: say so, go on
                reasons.append(f'{how}: {err}'.splitlines()[0][:200])
                continue
            model.eval()  # not chained: several mm backbones' train() return None
            built[name] = (model.to(device), how)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            log(start, f'built {name}: {how}, {params:.1f} M params')
            break
        else:
            skipped[name] = '; '.join(reasons) or 'no way to build it here'
            log(start, f'skipped {name}: {skipped[name]}')
    return built, skipped


# ---------------------------------------------------------------------------- measuring
def count(model: nn.Module, x: torch.Tensor) -> dict:
    """Parameters (M) and both FLOP counts (G) of one forward of ``x``."""
    from ravlt_dense.tools.analysis import module_flops, traced_flops
    out = dict(params_M=sum(p.numel() for p in model.parameters()) / 1e6)
    with torch.no_grad():
        try:
            out['flops_full_G'] = traced_flops(model, (x, ))['total'] / 1e9
        except Exception as err:  # tracing is fragile: report it, keep the row
            out.update(flops_full_G=math.nan, note=f'trace failed: {type(err).__name__}')
        out['flops_modules_G'] = module_flops(model, (x, ))['total'] / 1e9
    return out


def time_models(built: Dict[str, tuple], x: torch.Tensor, warmup: int, repeat: int,
                start: float) -> Tuple[Dict[str, dict], Dict[str, str]]:
    """Latency of every model, timed in turn round after round; a model that fails its first
    pass is dropped with the reason."""
    def call(model):
        def run():
            with torch.inference_mode():
                model(x)
        return run

    calls = {name: call(model) for name, (model, _) in built.items()}
    failed = {}
    for i in range(warmup):
        for name in list(calls):
            try:
                calls[name]()
            except Exception as err:
                failed[name] = f'forward failed: {type(err).__name__}: {err}'[:200]
                del calls[name]
        log(start, f'warm-up round {i + 1}/{warmup} done')
    times = {name: [] for name in calls}
    for i in range(repeat):
        for name, ts in interleaved_seconds(calls, 1, x.device).items():
            times[name] += ts
        log(start, f'round {i + 1}/{repeat}: ' + ', '.join(
            f'{name} {times[name][-1] * 1e3:.0f} ms' for name in calls))
    return {name: latency_stats(sorted(ts), 1) for name, ts in times.items()}, failed


def measure(names: List[str], rows: List[accuracy.Published], args,
            start: float) -> Tuple[Dict[str, dict], Dict[str, str]]:
    """``({name: costs}, {name: why not measured})`` of the models' backbones."""
    device = torch.device(args.device)
    built, skipped = build_models(names, rows, args.shape, device, start)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *args.shape, device=device)
    costs = {}
    for name, (model, how) in built.items():
        costs[name] = dict(count(model, x), cost_measured_as=how)
        log(start, f"counted {name}: {costs[name]['params_M']:.1f} M params, "
            f"{costs[name]['flops_full_G']:.1f} G FLOPs (full), "
            f"{costs[name]['flops_modules_G']:.1f} G (modules only)")
    if not args.no_latency and built:
        latencies, failed = time_models(built, x, args.warmup, args.repeat, start)
        for name, why in failed.items():
            skipped[name] = why
            costs.pop(name)
        for name, lat in latencies.items():
            costs[name].update(lat)
    return costs, skipped


# ---------------------------------------------------------------------------- reports
def table_rows(rows: List[accuracy.Published], costs: Dict[str, dict],
               skipped: Dict[str, str], args, machine: str) -> List[dict]:
    """One row per published accuracy, with the costs measured here (the CSV)."""
    labels = accuracy.model_names(args.metafile)
    out = []
    for r in rows:
        bench = accuracy.BENCHMARKS[r.benchmark]
        label, family = labels[r.model]
        out.append(dict(
            benchmark=r.benchmark, head=bench.head, dataset=bench.dataset,
            schedule=bench.schedule, metric=bench.metric, model=r.model, label=label,
            family=family, published=r.value, source=r.source, entry=r.entry,
            metafile=r.metafile, config=r.config, **costs.get(r.model, {}),
            not_measured=skipped.get(r.model, ''), input='x'.join(map(str, args.shape)),
            machine=machine))
    return out


MEASURED = ('params_M', 'flops_full_G', 'flops_modules_G', 'latency_ms', 'latency_q1_ms',
            'latency_q3_ms', 'repeat')


def read_costs(path: str, names: Sequence[str]) -> Tuple[Dict[str, dict], Dict[str, str],
                                                          str, List[int]]:
    """The costs of ``names`` in an earlier run's CSV: ``(costs, not measured, machine,
    shape)``."""
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows or not set(MEASURED[:3]) <= set(rows[0]):
        raise SystemExit(f'--costs-from {path}: not an accuracy_cost.csv (no {MEASURED[0]} '
                         'column)')
    costs, skipped = {}, {}
    for row in rows:
        name = row['model']
        if row['params_M']:
            costs[name] = {k: float(row[k]) for k in MEASURED if row.get(k)}
            costs[name].update(cost_measured_as=row['cost_measured_as'], note=row['note'])
        elif row['not_measured']:
            skipped[name] = row['not_measured']
    for name in names:
        if name not in costs and name not in skipped:
            skipped[name] = f'not in {path}'
    return ({n: c for n, c in costs.items() if n in names},
            {n: why for n, why in skipped.items() if n in names}, rows[0]['machine'],
            [int(v) for v in rows[0]['input'].split('x')])


CSV_COLUMNS = ['benchmark', 'head', 'dataset', 'schedule', 'metric', 'model', 'label', 'family',
               'published', 'source', 'entry', 'metafile', 'config', 'params_M',
               'flops_full_G', 'flops_modules_G', 'latency_ms', 'latency_q1_ms',
               'latency_q3_ms', 'repeat', 'cost_measured_as', 'not_measured', 'note', 'input',
               'machine']


def csv_text(table: List[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction='ignore')
    writer.writeheader()
    for row in table:
        writer.writerow({k: row.get(k, '') for k in CSV_COLUMNS})
    return buf.getvalue()


def _num(value, digits=1, suffix='') -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '–'
    return f'{value:.{digits}f}{suffix}'


def _latency_cell(c: dict) -> str:
    if 'latency_ms' not in c:
        return '–'
    return f"{c['latency_ms']:.0f} ({c['latency_q1_ms']:.0f}–{c['latency_q3_ms']:.0f})"


def over_baseline(table: List[dict], costs: Dict[str, dict]) -> List[str]:
    """What RAVLT buys over Swin-T: per RAVLT variant, its cost as a multiple of Swin-T's and
    its accuracy minus Swin-T's on each benchmark where both are published."""
    base = costs.get(BASELINE)
    ravlt = list(dict.fromkeys(r['model'] for r in table
                               if r['family'] == accuracy.RAVLT_FAMILY and r['model'] in costs))
    by = {(r['model'], r['benchmark']): r for r in table}
    benches = [b for b in dict.fromkeys(r['benchmark'] for r in table) if (BASELINE, b) in by]
    if base is None or not ravlt or not benches:
        return []
    keys = [k for k in ('params_M', 'flops_full_G', 'latency_ms') if k in base]
    names = {'params_M': 'params', 'flops_full_G': 'FLOPs', 'latency_ms': 'latency'}
    head = ['model'] + [names[k] for k in keys] + [accuracy.BENCHMARKS[b].title for b in benches]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    units = {'params_M': ' M', 'flops_full_G': ' G', 'latency_ms': ' ms'}
    ref = [_num(base[k], 0 if k == 'latency_ms' else 1, units[k]) for k in keys]
    lines.append('| Swin-T | ' + ' | '.join(ref + [str(by[(BASELINE, b)]['published'])
                                                    for b in benches]) + ' |')
    for m in ravlt:
        cells = [f'{costs[m][k] / base[k]:.2f}x' for k in keys]
        for b in benches:
            row = by.get((m, b))
            cells.append(f"{row['published'] - by[(BASELINE, b)]['published']:+.1f}"
                         if row else '–')
        lines.append(f"| {by[next(k for k in by if k[0] == m)]['label']} | "
                     + ' | '.join(cells) + ' |')
    return lines


def every_model(table: List[dict], costs: Dict[str, dict], order: List[str]) -> List[str]:
    """One row per model (in the order of ``order``): its costs, then its accuracy on each
    benchmark."""
    benches = list(dict.fromkeys(r['benchmark'] for r in table))
    by = {(r['model'], r['benchmark']): r['published'] for r in table}
    table = sorted(table, key=lambda r: order.index(r['model']))
    head = ['model', 'params M', 'FLOPs G full', 'FLOPs G modules', 'latency ms'] + [
        accuracy.BENCHMARKS[b].title for b in benches]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for model, label in dict.fromkeys((r['model'], r['label']) for r in table):
        c = costs.get(model, {})
        cells = [label, _num(c.get('params_M')), _num(c.get('flops_full_G')),
                 _num(c.get('flops_modules_G')), _latency_cell(c)]
        lines.append('| ' + ' | '.join(cells + [str(by.get((model, b), '–'))
                                              for b in benches]) + ' |')
    return lines


def markdown(table: List[dict], costs, skipped, args, machine: str, command: str,
             elapsed: float, version: str = '') -> str:
    shape = 'x'.join(map(str, args.shape))
    rounds = {c['repeat'] for c in costs.values() if 'latency_ms' in c}
    timing = (f'median of {max(rounds):.0f} rounds, the models timed in turn in one process, '
              'IQR in brackets' if rounds else 'not measured (--no-latency)')
    where = (f'measured in an earlier run, read from `{args.costs_from}`' if args.costs_from
             else 'measured here')
    lines = [f'# Accuracy against cost, {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
             f'Command: `{command}` ({elapsed:.0f} s)  ',
             f'Machine: {machine}; torch {torch.__version__}, Python '
             f'{platform.python_version()}' + (f'; code at {version}' if version else ''), '',
             '- **Published** (read from metafiles, not measured here): the accuracy columns; '
             'RAVLT\'s from `' + osp.relpath(args.metafile or zoo.METAFILE) + '`, the others\' '
             'from the installed ' + ', '.join(
                 f'{p} {package_version(p)}' for p in accuracy.PACKAGES) + ' metafiles '
             '(entry named in the table).',
             f'- **Costs** ({where}): the backbone alone, one {shape} image, fp32, eval: '
             'parameters; FLOPs (1 multiply-add = 1 FLOP), full = traced with the attention '
             'products, modules = what the paper counts; latency: ' + timing + '.', '']
    summary = over_baseline(table, costs)
    if summary:
        lines += ['## What RAVLT buys over Swin-T, at what cost', '',
                  'Cost: RAVLT\'s as a multiple of Swin-T\'s (measured); accuracy: RAVLT\'s '
                  'minus Swin-T\'s (published).', ''] + summary + ['']
    lines += ['## Every model', '', 'Costs measured; accuracies published (the tables below '
              'name each one\'s metafile entry).', ''] + every_model(
                  table, costs, list(accuracy.model_names(args.metafile))) + ['']
    for bench in dict.fromkeys(r['benchmark'] for r in table):
        b = accuracy.BENCHMARKS[bench]
        lines += [f'## {b.title}', '',
                  f'| model | {b.metric} (published) | metafile entry | params M | '
                  'FLOPs G full | FLOPs G modules | latency ms | backbone measured as |',
                  '|---|---|---|---|---|---|---|---|']
        for r in (r for r in table if r['benchmark'] == bench):
            c = costs.get(r['model'], {})
            lines.append(
                f"| {r['label']} | {r['published']} | {r['source']}: `{r['entry']}` | "
                f"{_num(c.get('params_M'))} | {_num(c.get('flops_full_G'))} | "
                f"{_num(c.get('flops_modules_G'))} | {_latency_cell(c)} | "
                f"{c.get('cost_measured_as') or 'not measured: ' + r['not_measured']} |")
        lines.append('')
    if skipped:
        lines += ['Not measured here:', ''] + [f'- `{n}`: {why}' for n, why in skipped.items()]
    return '\n'.join(lines) + '\n'


def package_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    dist = {'mmseg': 'mmsegmentation'}.get(package, package)
    try:
        return version(dist)
    except PackageNotFoundError:
        return '(not installed)'


def short_label(label: str, family: str) -> str:
    """'RAVLT-T' -> 'T', 'ResNet-50' -> '50': the family is in the legend."""
    return label[len(family) + 1:] if label.startswith(family + '-') else label


def figure_png(table: List[dict], args, machine: str) -> bytes:
    """Accuracy (published) against each measured cost: a row of panels per benchmark."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    keys = [k for k in AXES if not (k == 'latency_ms' and args.no_latency)]
    points = [r for r in table if all(isinstance(r.get(k), float) and math.isfinite(r[k])
                                      for k in keys)]
    benches = list(dict.fromkeys(r['benchmark'] for r in points))
    if not benches:
        raise RuntimeError('no model with a published accuracy was measured: nothing to plot')
    fig, axes = plt.subplots(len(benches), len(keys), squeeze=False,
                             figsize=(3.6 * len(keys), 2.7 * len(benches) + 0.9))
    families = list(dict.fromkeys(r['family'] for r in points))
    for i, bench in enumerate(benches):
        rows = [r for r in points if r['benchmark'] == bench]
        for j, key in enumerate(keys):
            ax = axes[i][j]
            for family in families:
                fam = sorted((r for r in rows if r['family'] == family), key=lambda r: r[key])
                if not fam:
                    continue
                marker, color = STYLES.get(family, ('x', 'black'))
                ours = family == accuracy.RAVLT_FAMILY
                ax.plot([r[key] for r in fam], [r['published'] for r in fam], marker=marker,
                        color=color, lw=2 if ours else 0.8, ms=11 if ours else 6,
                        zorder=3 if ours else 2)
                for r in fam:
                    ax.annotate(short_label(r['label'], family), (r[key], r['published']),
                                textcoords='offset points', xytext=(4, 3), fontsize=7,
                                color=color)
            ax.set_xscale('log')  # PVTv2-b0 to RAVLT-L: a factor of 30 in parameters
            ax.xaxis.set_major_locator(LogLocator(subs=(1., 2., 5.)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.margins(x=0.15, y=0.15)
            ax.grid(True, which='major', alpha=0.3)
            ax.set_xlabel(AXES[key] + ', measured', fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(f'{accuracy.BENCHMARKS[bench].title}\n(published)', fontsize=8)
    handles = [Line2D([], [], marker=STYLES.get(f, ('x', 'black'))[0],
                      color=STYLES.get(f, ('x', 'black'))[1], ms=9 if f == 'RAVLT' else 6,
                      lw=1) for f in families]
    height = fig.get_figheight()
    fig.legend(handles, families, loc='upper center', ncol=len(families), fontsize=8,
               bbox_to_anchor=(0.5, 1 - 0.5 / height), frameon=False)
    shape = 'x'.join(map(str, args.shape))
    fig.suptitle(f'Published accuracy (metafiles) against cost measured here: backbone, one '
                 f'{shape} image, fp32\n{machine}', fontsize=9, y=1 - 0.05 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=80)
    plt.close(fig)
    return small_png(buf.getvalue())


def code_version() -> str:
    """The clone's commit ('0e27762', '+ local changes' where the tree differs), '' outside a
    git clone: the numbers of a backbone change with its code."""
    import subprocess
    try:
        out = subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=models.REPO,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ''
    version = out.stdout.strip()
    if out.returncode or not version:
        return ''
    return version.replace('-dirty', ' + local changes')


def load_average(at_start) -> str:
    """', load average 3.1 -> 5.2': how busy the machine was (other processes too) at the start
    and the end of the measurements; '' where unknown."""
    if at_start is None:
        return ''
    return f', load average {at_start:.1f} -> {os.getloadavg()[0]:.1f}'


def small_png(png: bytes, colors: int = 64) -> bytes:
    """The same picture in a palette of ``colors`` (a line plot needs few): a third of the
    size, small enough for the docs."""
    from PIL import Image
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert('RGB').quantize(colors).save(out, 'PNG', optimize=True)
    return out.getvalue()


def write_all(out_dir: str, contents: Dict[str, bytes]) -> List[str]:
    """Write every file to a temporary name in ``out_dir`` first, then rename them into place:
    a failed write changes no output and leaves no temporary file."""
    os.makedirs(out_dir, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    temps = {}
    try:
        for name, data in contents.items():
            fd, temps[name] = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=out_dir)
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            os.chmod(temps[name], 0o666 & ~umask)
        for name, tmp in list(temps.items()):
            os.replace(tmp, osp.join(out_dir, name))
            del temps[name]
    finally:
        for tmp in temps.values():
            if osp.exists(tmp):
                os.remove(tmp)
    return [osp.join(out_dir, name) for name in contents]


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = accuracy.published(args.benchmarks, args.metafile)
    with_accuracy = list(dict.fromkeys(r.model for r in rows))
    names = args.models or with_accuracy
    skipped = {n: 'no published accuracy on ' + ', '.join(args.benchmarks)
               for n in names if n not in with_accuracy}
    names = [n for n in names if n in with_accuracy]
    rows = [r for r in rows if r.model in names]
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
    version = '' if args.costs_from else code_version()  # what is imported is what is measured
    if args.costs_from:
        costs, not_built, machine, args.shape = read_costs(args.costs_from, names)
        args.no_latency = not any('latency_ms' in c for c in costs.values())
    else:
        log(start, f'{len(rows)} published accuracies of {len(names)} models; measuring the '
            f"backbones at {'x'.join(map(str, args.shape))}")
        costs, not_built = measure(names, rows, args, start)
        machine = device_name(torch.device(args.device))
        if args.device.startswith('cpu'):
            machine += f' ({os.cpu_count()} logical CPUs{load_average(load)})'
    skipped.update(not_built)
    table = table_rows(rows, costs, skipped, args, machine)
    command = 'python ' + ' '.join([osp.relpath(osp.abspath(__file__))] + (
        sys.argv[1:] if argv is None else list(argv)))
    text = markdown(table, costs, skipped, args, machine, command, time.monotonic() - start,
                    version)
    # everything rendered before anything is written
    contents = dict(zip(OUTPUTS, (figure_png(table, args, machine), text.encode(),
                                  csv_text(table).encode())))
    written = write_all(args.out_dir, contents)
    print(text)
    print('wrote ' + ', '.join(written))
    return table


if __name__ == '__main__':
    main()
