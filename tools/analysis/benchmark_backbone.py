"""Fast path vs reference path of the RAVLT backbone, measured side by side in one run.

    python tools/analysis/benchmark_backbone.py [--archs t s b l] [--sizes 224 512 800x1216]
        [--repeat 3] [--device cpu|cuda] [--work-dir work_dirs/benchmark_backbone]
        [--compile [--versus-swin]]

For each variant and input size the two paths run alternately on the same weights and input,
so machine noise hits both alike; the table gives their median latencies, the speed-up
(reference / fast) and the largest output difference. ``--compile`` adds ``torch.compile``d
models to the same rotation: the fast path (released mix), the all-RALA model and, with
``--versus-swin``, mmdet's Swin-T (eager and compiled), with their compile times and the
ratios between them. A Markdown table, a CSV and a bar plot of the speed-ups are written to the
work dir.
"""
import argparse
import csv
import os
import os.path as osp
import statistics
import time

import torch

from ravlt_dense import zoo
from ravlt_dense.analysis.timing import device_name, parse_size, synchronize
from ravlt_dense.models.backbones.ravlt import RAVLT


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=zoo.variants(),
                        help='RAVLT variants (default: all)')
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[(224, 224), (512, 512), (800, 1216)],
                        help='input sizes, e.g. 224 or 800x1216 (height x width)')
    parser.add_argument('--repeat', type=int, default=3, help='timed runs per path')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs per path')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile (inductor) of the fast path and of the '
                        'all-RALA model, in the same rotation')
    parser.add_argument('--versus-swin', action='store_true',
                        help='with --compile: mmdet\'s Swin-T, eager and compiled, as well')
    parser.add_argument('--work-dir', default='work_dirs/benchmark_backbone')
    args = parser.parse_args(argv)
    if args.versus_swin and not args.compile:
        parser.error('--versus-swin compares compiled models: add --compile')
    return args


def timed(model, x, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    model(x)
    synchronize(device)
    return time.perf_counter() - start


def swin_t() -> torch.nn.Module:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS.build(dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
                             num_heads=[3, 6, 12, 24], window_size=7, out_indices=(0, 1, 2, 3)))


def contenders(arch, args):
    """name -> model to time; compiled ones are compiled on their first (warm-up) call."""
    model = RAVLT(arch).to(args.device).eval()
    reference = RAVLT(arch).to(args.device).eval().set_attn_impl('reference')
    reference.load_state_dict(model.state_dict())
    runs = {'fast': model, 'reference': reference}
    if args.compile:
        runs['compiled'] = torch.compile(model)
        runs['rala_compiled'] = torch.compile(
            RAVLT(arch, attn_types=('rala', ) * 4).to(args.device).eval())
    if args.versus_swin:
        swin = swin_t().to(args.device)
        swin.eval()  # not chained: mmdet's SwinTransformer.train() returns None
        runs['swin_t'], runs['swin_t_compiled'] = swin, torch.compile(swin)
    return runs


@torch.no_grad()
def compare(arch, size, args):
    torch.manual_seed(0)
    runs = contenders(arch, args)
    x = torch.randn(args.batch, 3, *size, device=args.device)
    times = {name: [] for name in runs}
    outputs, first_call = {}, {}
    for name, run in runs.items():  # warm-up (compilation), and the outputs to compare
        first_call[name] = timed(run, x, args.device)
        for _ in range(args.warmup):
            outputs[name] = run(x)
    for _ in range(args.repeat):  # alternate so that noise hits every contender alike
        for name, run in runs.items():
            times[name].append(timed(run, x, args.device))
    median = {name: statistics.median(t) for name, t in times.items()}
    row = dict(arch=arch.upper(), size=f'{size[0]}x{size[1]}', device=args.device,
               batch=args.batch, reference_s=round(median['reference'], 4),
               fast_s=round(median['fast'], 4),
               speedup=round(median['reference'] / median['fast'], 2),
               max_abs_diff=float(f'{max_difference(outputs, "fast", "reference"):.2e}'))
    if args.compile:
        row.update(
            compiled_s=round(median['compiled'], 4),
            compile_time_s=round(first_call['compiled'], 1),
            compiled_vs_fast=round(median['fast'] / median['compiled'], 2),
            compiled_vs_reference=round(median['reference'] / median['compiled'], 2),
            compiled_max_abs_diff=float(f'{max_difference(outputs, "compiled", "fast"):.2e}'),
            rala_compiled_s=round(median['rala_compiled'], 4))
    if args.versus_swin:
        row.update(swin_t_s=round(median['swin_t'], 4),
                   swin_t_compiled_s=round(median['swin_t_compiled'], 4),
                   rala_compiled_vs_swin_t_compiled=round(
                       median['swin_t_compiled'] / median['rala_compiled'], 2),
                   compiled_vs_swin_t_compiled=round(
                       median['swin_t_compiled'] / median['compiled'], 2))
    return row


def max_difference(outputs, a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(outputs[a], outputs[b]))


def write_outputs(rows, args):
    os.makedirs(args.work_dir, exist_ok=True)
    keys = list(rows[0])
    with open(osp.join(args.work_dir, 'results.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    table = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    table += ['| ' + ' | '.join(str(r[k]) for k in keys) + ' |' for r in rows]
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(f'Device: {device_name(args.device)}, torch {torch.__version__}\n\n')
        f.write('\n'.join(table) + '\n')
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib not installed: no plot')
        return table
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(rows), 3.5))
    labels = [f"{r['arch']}\n{r['size']}" for r in rows]
    ax.bar(labels, [r['speedup'] for r in rows], color='tab:blue')
    ax.axhline(1.0, color='grey', lw=0.8)
    ax.set_ylabel('speed-up (reference / fast)')
    ax.set_title(f'RAVLT fast path, {args.device}')
    fig.tight_layout()
    fig.savefig(osp.join(args.work_dir, 'speedup.png'), dpi=120)
    return table


def main(argv=None):
    args = parse_args(argv)
    rows = []
    jobs = [(a, s) for a in args.archs for s in args.sizes]
    print(f'Benchmarking {len(jobs)} cases on {device_name(args.device)}')
    for i, (arch, size) in enumerate(jobs, 1):
        row = compare(arch, size, args)
        rows.append(row)
        print(f'[{i}/{len(jobs)}] RAVLT-{row["arch"]} {row["size"]}: reference '
              f'{row["reference_s"]:.3f}s, fast {row["fast_s"]:.3f}s, '
              f'speed-up {row["speedup"]:.2f}x, max |diff| {row["max_abs_diff"]:.1e}', flush=True)
        if args.compile:
            print('    ' + ', '.join(f'{k} {v}' for k, v in row.items() if 'compiled' in k
                                     or k.startswith('swin')), flush=True)
    print('\n'.join(write_outputs(rows, args)))
    print(f'Results in {args.work_dir}/ (results.md, results.csv, speedup.png)')
    return rows


if __name__ == '__main__':
    main()
