"""Speed, memory and FLOPs of RAVLT against Swin, ResNet-50, PVTv2 and ConvNeXt, on CPU or CUDA.

    python tools/analysis/benchmark.py [--preset NAME] [--level backbone|model]
        [--models ravlt_s swin_t ...] [--shape H W [--shape H W ...]] [--batch 1 8]
        [--train-batch 2] [--device cpu|cuda] [--dtype float32|float16|bfloat16]
        [--paths fast fast-nokernel reference] [--compile [BACKEND]] [--repeat 3] [--warmup 1]
        [--no-flops]
        [--budget SECONDS] [--timeout SECONDS] [--max-latency SECONDS] [--max-memory-gb GB]
        [--work-dir work_dirs/benchmark]
        [--from-csv benchmark.csv]

Per model (RAVLT: per path) and input shape: parameters, FLOPs counted two ways (full: traced,
attention products included; modules-only: what the paper's counter sees), and per inference
batch the median latency after warm-up (IQR, min-max), images/s and the peak memory of a
forward pass (RSS on CPU, max allocated on CUDA); with ``--train-batch`` a forward + backward
step and its peak memory; with ``--compile`` the compiled model's inference at the largest
batch, timed in turn with the eager one. RAVLT runs once per ``--paths`` entry: the fast path
(RALA's fused kernels where they apply, CUDA), the same without the kernels, the reference path.
Each case is a fresh process; eager cases come first, compiled ones after, so a run cut by
``--budget`` still has the eager table. Writes benchmark.md (the summary with ratios to Swin-T,
then every row), benchmark.csv (after every case), summary.csv and scaling.png to the work dir.
How latency and memory grow with the input size up to 4096x4096, against budgets:
resolution_sweep.py. A preset (``--preset NAME``) answers one question with the models, sizes
and repeats it needs; ``--help`` lists them.
"""
import argparse
import datetime
import os
import os.path as osp
import platform
import sys
import time

import torch

from ravlt_dense.tools.analysis import PAPER_COUNTING

from . import models, presets, report
from .case import run_isolated
from .timing import cpu_model

DEFAULT_SHAPES = [(224, 224), (512, 512), (800, 1216)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                epilog=presets.help_text(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--preset', choices=list(presets.PRESETS) + list(presets.ALIASES),
                   metavar='NAME', help='a question and the run that answers it (listed '
                   'below): ' + ', '.join(presets.PRESETS))
    p.add_argument('--level', choices=['backbone', 'model'], default='backbone')
    p.add_argument('--models', nargs='+', help='backbones: ' + ' '.join(models.BACKBONES)
                   + '; models: ' + ' '.join(models.WHOLE_MODELS))
    p.add_argument('--shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
                   help='input height and width; repeat for several (default: 224 224, 512 512, '
                   '800 1216 for backbones, each model\'s own for whole models)')
    p.add_argument('--batch', type=int, nargs='+', default=[1], help='inference batch sizes')
    p.add_argument('--train-batch', type=int, default=0,
                   help='also time a forward + backward step at this batch (backbones)')
    p.add_argument('--repeat', type=int, default=3, help='timed passes per measurement')
    p.add_argument('--warmup', type=int, default=1, help='untimed passes first')
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', choices=['float32', 'float16', 'bfloat16'], default='float32',
                   help='autocast dtype (CUDA; CPU stays float32)')
    p.add_argument('--paths', nargs='+', choices=models.PATHS, default=['fast'],
                   help='RAVLT once per path: fast (with RALA\'s fused kernels where they apply: '
                   'CUDA), fast-nokernel (RAVLT(rala_kernel=False)), reference (the formulas '
                   'written out)')
    p.add_argument('--no-flops', action='store_true', help='skip the two FLOP counts')
    p.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                   help='also time torch.compile(model, backend=BACKEND) (default inductor) at '
                   'the largest --batch, in turn with the eager model')
    p.add_argument('--budget', type=float, help='seconds for the whole run: what is left then '
                   'is listed as not run, what was measured is kept')
    p.add_argument('--timeout', type=float, default=1800, help='seconds per case')
    p.add_argument('--max-latency', type=float, metavar='SECONDS',
                   help='a forward pass running longer stops its case (marked in the table)')
    p.add_argument('--max-memory-gb', type=float, metavar='GB',
                   help="a case's process holding more stops it (CPU: resident memory; CUDA: "
                   "the share of the GPU torch may use)")
    p.add_argument('--work-dir', default='work_dirs/benchmark')
    p.add_argument('--from-csv', help='measure nothing: re-render the tables and plot from a '
                   'benchmark.csv of an earlier run')
    name = presets.resolve(p.parse_known_args(argv)[0].preset)
    preset = presets.PRESETS[name].flags if name else {}
    # --shape appends to its default: the preset's shapes apply only when none is given
    p.set_defaults(**{k: v for k, v in preset.items() if k != 'shape'})
    args = p.parse_args(argv)
    args.preset = name
    args.shape = args.shape or preset.get('shape')
    if name and args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--preset {name} runs on CUDA, but torch.cuda.is_available() is False: add '
                '--device cpu --dtype float32 to run its models on the CPU')
    if args.device.startswith('cpu') and args.dtype != 'float32':
        p.error('--dtype float16/bfloat16 is for CUDA; the CPU benchmark is float32 '
                '(add --dtype float32)')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda but torch.cuda.is_available() is False (use --device cpu)')
    if args.repeat < 1 or args.warmup < 1 or min(args.batch) < 1 or args.train_batch < 0:
        p.error('--repeat, --warmup and --batch must be >= 1, --train-batch >= 0')
    if any(v is not None and v <= 0 for v in (args.max_latency, args.max_memory_gb)):
        p.error('--max-latency and --max-memory-gb must be positive')
    if args.shape and min(min(s) for s in args.shape) < 1:
        p.error(f'--shape takes positive H W, got {args.shape}')
    if args.level == 'model' and args.train_batch:
        p.error('--train-batch times backbones; drop it with --level model')
    return args


def plan(args):
    """Eager cases first (path by path), then compiled ones; notes on what is skipped."""
    level = args.level
    names = args.models or list(models.DEFAULT_BACKBONES if level == 'backbone'
                                else models.DEFAULT_WHOLE_MODELS)
    notes, cases = [], []
    for compiled in ([False, True] if args.compile else [False]):
        for path in args.paths:
            for name in names:
                why = models.missing_requirement(name, level)
                if why:
                    if not compiled and path == args.paths[0]:
                        notes.append(f'- skipped `{name}`: {why}')
                    continue
                rala = models.has_rala(name, level)
                if not rala and path != args.paths[0]:
                    continue  # nothing to switch: measured once
                shapes = [tuple(s) for s in args.shape] if args.shape else (
                    DEFAULT_SHAPES if level == 'backbone' else [models.WHOLE_MODELS[name][3]])
                cases += [dict(name=name, level=level, shape=shape, batches=args.batch,
                               train_batch=0 if compiled else args.train_batch,
                               device=args.device, dtype=args.dtype, warmup=args.warmup,
                               repeat=args.repeat, flops=not (args.no_flops or compiled),
                               compile=args.compile if compiled else None,
                               path=path if rala else None, max_pass_s=args.max_latency,
                               max_memory_gb=args.max_memory_gb) for shape in shapes]
    return cases, notes


def run(cases, args, save=lambda rows: None):
    """Each case in its own process, within its time limit and what is left of the budget;
    ``save(rows)`` after each."""
    rows, start = [], time.monotonic()
    for i, case in enumerate(cases, 1):
        left = float('inf') if args.budget is None else args.budget - (time.monotonic() - start)
        budget_cut = left < args.timeout
        why = f'the {args.budget:.0f} s budget was spent' if budget_cut else ''
        got = run_isolated(case, min(args.timeout, left), why)
        rows += got
        save(rows)
        status = next((r['note'] for r in got if r.get('note')), 'ok')
        what = ' '.join(filter(None, (case['name'], case['path'],
                                      'compiled' if case['compile'] else 'eager')))
        print(f"[{time.monotonic() - start:5.0f} s] {i}/{len(cases)} {what} "
              f"{case['shape'][0]}x{case['shape'][1]}: {status}", flush=True)
    return rows


def render(rows, notes, args, elapsed):
    measured = [r for r in rows if 'latency_ms' in r]
    for r in rows:
        if r.get('note'):
            notes.append(f"- {report.label(r)} {r.get('mode', '')} at {r['input']}: {r['note']}")
        if r.get('compile_s'):
            notes.append(f"- {report.label(r)} at {r['input']}: compiled "
                         f"{r['speedup_vs_eager']:.2f}x the eager model's speed, same process "
                         f"(compilation {r['compile_s']:.0f} s)")
    if torch.cuda.is_available() and args.device.startswith('cuda'):
        machine = (f'{torch.cuda.get_device_name(args.device)}, CUDA {torch.version.cuda}, '
                   f'{cpu_model()}')
    else:
        machine = f'{cpu_model()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} threads'
    lines = [f'# Benchmark ({args.level}), {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
             f"Command: `python {' '.join(sys.argv)}` ({elapsed:.0f} s)  ",
             *([f'Question (`--preset {args.preset}`): '
                f'{presets.PRESETS[args.preset].question}  '] if args.preset else []),
             f'Machine: {machine}; torch {torch.__version__}, Python '
             f'{platform.python_version()}', '']
    baseline = models.baseline(r['model'] for r in measured)
    if baseline:
        lines += [f'## Against {models.description(baseline, "backbone")} (same run)', '',
                  report.summary_table(measured, baseline), '',
                  '(ratio) = ours / Swin-T\'s for img/s and memory, Swin-T\'s / ours for times: '
                  'above 1 is faster, or more memory.', '']
    lines += ['## Every measurement', '', report.markdown_table(rows), '',
              '- Latency: per pass of the whole batch, median of the timed passes after the '
              'warm-up ones, IQR = inter-quartile range, img/s = batch / median. Inference: eval, '
              '`torch.inference_mode`; train: forward + backward (train mode, no optimizer '
              'step). dtype = autocast dtype (float32: none).',
              '- Peak memory: extra memory of the first pass over what model and input held '
              'before, one process per case (CPU: resident set size high-water mark; CUDA: '
              '`max_memory_allocated`).',
              '- Compiled: `torch.compile(model)`; its first call (the compilation) is not timed.',
              '- FLOPs: one image, 1 multiply-accumulate = 1 FLOP (fvcore/mmengine convention). '
              '**full** = traced count including the attention matrix products '
              '(`@`, bmm, scaled_dot_product_attention); **modules-only** = a hook counter on '
              'conv/linear/norm/pool/upsample modules, blind to functional products.',
              f'- How the paper counts: {PAPER_COUNTING}']
    if args.level == 'model':
        lines.append('- Whole models run in "tensor" mode (network forward without '
                     'post-processing, as mmdet/mmseg get_flops): Mask R-CNN = backbone, FPN, RPN '
                     'with proposal NMS, box head on all proposals, mask head on the first 100.')
    eager = [r for r in measured if r.get('mode', 'eager') == 'eager']
    for key, name in (('latency_ms', 'latency'), ('peak_mem_MB', 'peak memory'),
                      ('flops_full_G', 'FLOPs (full count; exact, unlike the timings)')):
        slopes = report.scaling_slopes(eager, key)
        if slopes:
            lines.append(f'- log-log slope of {name} vs pixels between the two largest shapes '
                         '(1 = linear, 2 = quadratic): ' + ', '.join(
                             f'{k} {v:.2f}' for k, v in slopes.items()))
    return lines, eager


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    paths = {k: osp.join(args.work_dir, k) for k in ('benchmark.md', 'benchmark.csv',
                                                     'summary.csv', 'scaling.png')}
    if args.preset:
        print(f'{presets.PRESETS[args.preset].question} (--preset {args.preset})', flush=True)
    if args.from_csv:
        rows = report.read_csv(args.from_csv)
        notes = [f'- rendered from `{args.from_csv}` (an earlier run)']
        os.makedirs(args.work_dir, exist_ok=True)
    else:
        os.makedirs(args.work_dir, exist_ok=True)
        cases, notes = plan(args)
        print(f'{len(cases)} cases' + (f', budget {args.budget:.0f} s' if args.budget else ''),
              flush=True)
        # the CSV after every case: a run stopped on the way keeps what it measured
        rows = run(cases, args, lambda rows: report.write_csv(rows, paths['benchmark.csv']))
    if osp.abspath(paths['benchmark.csv']) != osp.abspath(args.from_csv or ''):
        report.write_csv(rows, paths['benchmark.csv'])
    lines, eager = render(rows, notes, args, time.monotonic() - start)
    measured = [r for r in rows if 'latency_ms' in r]
    report.write_csv(report.summary_rows(measured), paths['summary.csv'],
                    report.summary_columns(measured))
    written = [paths['benchmark.md'], paths['benchmark.csv'], paths['summary.csv']]
    plot_note = report.plot_scaling(eager, paths['scaling.png'])
    if plot_note:
        notes.append(f'- {plot_note}')
    else:
        lines.append(f"- Plot: `{paths['scaling.png']}`")
        written.append(paths['scaling.png'])
    if notes:
        lines += ['', 'Notes:'] + notes
    text = '\n'.join(lines) + '\n'
    report.write_text(paths['benchmark.md'], text)
    print(text)
    print('wrote ' + ', '.join(written))
    return rows

