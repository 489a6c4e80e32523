"""Cost of RAVLT against Swin, ResNet-50, PVTv2 (and ConvNeXt), backbones or whole models.

    python tools/analysis/benchmark.py [--level backbone|model] [--models ravlt_s swin_t ...]
        [--sizes 224 512 800x1216] [--batch 1] [--repeat 3] [--warmup 1]
        [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--work-dir work_dirs/benchmark]
        [--compile [BACKEND]]

Per model and input size: parameters, FLOPs counted two ways (full: traced, attention products
included; modules-only: what the paper's counter sees), median latency after warm-up with its
IQR and min-max, peak memory of a forward pass (RSS on CPU, max allocated on CUDA) and images/s.
Each (model, size) runs in a fresh process. Writes benchmark.md, benchmark.csv and scaling.png
(log-log latency and memory against pixels) to the work dir.
"""
import argparse
import datetime
import importlib.util
import os
import os.path as osp
import platform
import sys

import torch

from ravlt_dense.analysis import PAPER_COUNTING
from ravlt_dense.analysis import bench
from ravlt_dense.analysis.timing import cpu_model, parse_size

DEFAULT_SIZES = {'backbone': ['224', '512', '800x1216']}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--level', choices=['backbone', 'model'], default='backbone')
    p.add_argument('--models', nargs='+', help='backbones: ' + ' '.join(bench.BACKBONES)
                   + '; models: ' + ' '.join(bench.WHOLE_MODELS))
    p.add_argument('--sizes', nargs='+', help='HxW or S (square); default: 224 512 800x1216 '
                   'for backbones, each model\'s own size (800x1344 / 512x512) for models')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeat', type=int, default=3, help='timed forward passes')
    p.add_argument('--warmup', type=int, default=1, help='untimed forward passes first')
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', choices=['float32', 'float16', 'bfloat16'], default='float32',
                   help='autocast dtype (CUDA; CPU stays float32)')
    p.add_argument('--no-flops', action='store_true', help='skip the two FLOP counts')
    p.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                   help='also time torch.compile(model, backend=BACKEND) (default inductor), '
                   'in turn with the eager model: a second row per model and size')
    p.add_argument('--timeout', type=float, default=1800, help='seconds per (model, size)')
    p.add_argument('--work-dir', default='work_dirs/benchmark')
    p.add_argument('--from-csv', help='measure nothing: re-render the table and plot from a '
                   'benchmark.csv of an earlier run')
    args = p.parse_args(argv)
    if args.device.startswith('cpu') and args.dtype != 'float32':
        p.error('--dtype float16/bfloat16 is for CUDA; the CPU benchmark is float32')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda but torch.cuda.is_available() is False')
    if args.repeat < 1 or args.warmup < 1 or args.batch < 1:
        p.error('--repeat, --warmup and --batch must be >= 1')
    return args


def progress(total: int):
    """tqdm when installed, else mmengine's ProgressBar; both get .update() per step."""
    if importlib.util.find_spec('tqdm') is not None:
        from tqdm import tqdm
        return tqdm(total=total, desc='benchmark')
    from mmengine.utils import ProgressBar
    return ProgressBar(total)


def main(argv=None):
    args = parse_args(argv)
    level = args.level
    names = args.models or list(bench.DEFAULT_BACKBONES if level == 'backbone'
                                else bench.DEFAULT_WHOLE_MODELS)
    notes, jobs = [], []
    if args.from_csv:
        names = []
        notes.append(f'- rendered from `{args.from_csv}` (an earlier run; repeat/warm-up as '
                     'recorded there)')
    for name in names:
        why = bench.missing_requirement(name, level)
        if why:
            notes.append(f'- skipped `{name}`: {why}')
            continue
        sizes = [parse_size(s) for s in args.sizes] if args.sizes else (
            [parse_size(s) for s in DEFAULT_SIZES['backbone']] if level == 'backbone'
            else [bench.WHOLE_MODELS[name][3]])
        jobs += [(name, size) for size in sizes]

    rows, bar = (bench.read_csv(args.from_csv) if args.from_csv else []), progress(len(jobs))
    for name, size in jobs:
        spec = dict(name=name, level=level, size=size, batch=args.batch, device=args.device,
                    dtype=args.dtype, warmup=args.warmup, repeat=args.repeat,
                    flops=not args.no_flops, compile=args.compile)
        for row in bench.run_isolated(spec, args.timeout):
            if row.get('note'):
                notes.append(f"- `{name}` at {row['input']}: {row['note']}")
            if row.get('compile_s'):
                notes.append(f"- {row['description']} at {row['input']}: "
                             f"{row['speedup_vs_eager']:.2f}x the eager model's speed "
                             f"(compilation took {row['compile_s']:.0f} s)")
            rows.append(row)
        bar.update()
    print()

    os.makedirs(args.work_dir, exist_ok=True)
    csv_path = osp.join(args.work_dir, 'benchmark.csv')
    md_path = osp.join(args.work_dir, 'benchmark.md')
    png_path = osp.join(args.work_dir, 'scaling.png')
    if osp.abspath(csv_path) != osp.abspath(args.from_csv or ''):
        bench.write_csv(rows, csv_path)
    measured = [r for r in rows if 'latency_ms' in r]
    plot_note = None
    sizes_per_model = {}
    for r in measured:
        sizes_per_model.setdefault(r['model'], set()).add(r['pixels'])
    if any(len(v) > 1 for v in sizes_per_model.values()):
        plot_note = bench.plot_scaling(measured, png_path)
    else:  # one size per model: nothing scales, no plot
        png_path = None

    lines = [f'# Benchmark ({level}), {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
             f"Command: `python {' '.join(sys.argv)}`  ",
             f'Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, '
             f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
             f'Python {platform.python_version()}', '',
             bench.markdown_table(rows), '',
             '- Latency: per forward pass of the whole batch (eval, `torch.inference_mode`), '
             f'median of {args.repeat} after {args.warmup} warm-up pass(es); IQR = inter-quartile '
             'range. img/s = batch / median latency.',
             '- Peak memory: extra memory of the first forward pass over model + input, '
             'measured in a fresh process per row (CPU: resident set size high-water mark; '
             'CUDA: max_memory_allocated).',
             '- FLOPs: one image, 1 multiply-accumulate = 1 FLOP (fvcore/mmengine convention). '
             '**full** = traced count including the attention matrix products '
             '(`@`, bmm, scaled_dot_product_attention); **modules-only** = a hook counter on '
             'conv/linear/norm/pool/upsample modules, blind to functional products.',
             f'- How the paper counts: {PAPER_COUNTING}']
    if level == 'model':
        lines.append('- Whole models run in "tensor" mode (network forward without '
                     'post-processing, as mmdet/mmseg get_flops): Mask R-CNN = backbone, FPN, RPN '
                     'with proposal NMS, box head on all proposals, mask head on the first 100.')
    for key, label in (('latency_ms', 'latency'), ('peak_mem_MB', 'peak memory'),
                       ('flops_full_G', 'FLOPs (full count; exact, unlike the timings)')):
        slopes = bench.scaling_slopes(measured, key)
        if slopes:
            lines.append(f'- log-log slope of {label} vs pixels between the two largest sizes '
                         '(1 = linear, 2 = quadratic): ' + ', '.join(
                             f'{bench.description(k, level)} {v:.2f}' for k, v in slopes.items()))
    if png_path and not plot_note:
        lines.append(f'- Plot: `{png_path}`')
    if plot_note:
        notes.append(f'- {plot_note}')
    if notes:
        lines += ['', 'Notes:'] + notes
    text = '\n'.join(lines) + '\n'
    with open(md_path, 'w') as f:
        f.write(text)
    print(text)
    print(f'wrote {md_path}, {csv_path}' + (f', {png_path}' if png_path and not plot_note else ''))
    return rows


if __name__ == '__main__':
    main()
