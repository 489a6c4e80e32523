"""Fast path vs reference path of the RAVLT backbone, measured side by side in one run.

    python tools/analysis/benchmark_backbone.py [--archs t s b l] [--sizes 224 512 800x1216]
        [--repeat 3] [--device cpu|cuda] [--work-dir work_dirs/benchmark_backbone]

For each variant and input size the two paths run alternately on the same weights and input,
so machine noise hits both alike; the table gives their median latencies, the speed-up
(reference / fast) and the largest output difference. A Markdown table, a CSV and a bar plot
of the speed-ups are written to the work dir.
"""
import argparse
import csv
import os
import os.path as osp
import statistics
import time

import torch

from ravlt_dense import zoo
from ravlt_dense.analysis.timing import device_name, parse_size
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
    parser.add_argument('--work-dir', default='work_dirs/benchmark_backbone')
    return parser.parse_args(argv)


def timed(model, x, device) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x)
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def compare(arch, size, args):
    torch.manual_seed(0)
    model = RAVLT(arch).to(args.device).eval()
    x = torch.randn(args.batch, 3, *size, device=args.device)
    times = {'fast': [], 'reference': []}
    outputs = {}
    for impl in times:  # warm-up, and the outputs to compare
        model.set_attn_impl(impl)
        for _ in range(args.warmup):
            outputs[impl] = model(x)
    for _ in range(args.repeat):  # alternate so that noise hits both paths alike
        for impl in times:
            model.set_attn_impl(impl)
            times[impl].append(timed(model, x, args.device))
    diff = max((a - b).abs().max().item() for a, b in zip(outputs['fast'],
                                                          outputs['reference']))
    fast, ref = statistics.median(times['fast']), statistics.median(times['reference'])
    return dict(arch=arch.upper(), size=f'{size[0]}x{size[1]}', device=args.device,
                batch=args.batch, reference_s=round(ref, 4), fast_s=round(fast, 4),
                speedup=round(ref / fast, 2), max_abs_diff=float(f'{diff:.2e}'))


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
    print('\n'.join(write_outputs(rows, args)))
    print(f'Results in {args.work_dir}/ (results.md, results.csv, speedup.png)')
    return rows


if __name__ == '__main__':
    main()
