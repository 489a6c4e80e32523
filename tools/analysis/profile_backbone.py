"""Where the time of a RAVLT forward goes: per stage and per operator kind, one device.

    python tools/analysis/profile_backbone.py [--arch s] [--attn mix rala] [--shape 800 1216]
        [--batch 8] [--dtype float16] [--device cuda] [--steps 5] [--no-rala-kernel]
        [--by-shape N]

Per stage: the mean time of the stem and of each stage (blocks + downsampling), from events
recorded around them. Per operator: torch.profiler's device (or CPU) time summed by operator
and grouped into convolutions, attention (SDPA), matrix products, normalisation and the
element-wise rest; ``--by-shape N``: the N costliest operators by input shapes (which layer's op
a kernel is). On the CPU also the process's CPU time (user, system) and page faults per
forward. Eval mode, autocast in ``--dtype`` (float32: none); on CUDA RALA runs through its
fused Triton kernels unless ``--no-rala-kernel``.
"""
import argparse
import resource
import time
from collections import defaultdict

import torch

from ravlt_dense.models.backbones.ravlt import RAVLT
from ravlt_dense.tools.benchmark.timing import autocast, synchronize

ATTN = dict(mix=('rala', 'rala', 'softmax', 'softmax'), rala=('rala', ) * 4)
# Checked in this order: cuDNN's attention kernels also say cudnn, its convs also say gemm.
KINDS = (('RALA kernels (Triton)', ('_query_sum_kernel', '_key_value_kernel', '_output_kernel')),
         ('attention (SDPA)', ('attention', 'flash', 'fmha', 'sdpa')),
         ('convolution', ('conv', 'cudnn', 'fprop', 'dgrad', 'wgrad', 'nchwtonhwc', 'nhwctonchw')),
         ('matrix products', ('matmul', 'bmm', 'mm', 'gemm', 'addmm', 'baddbmm')),
         ('normalisation', ('norm', )), ('complex RoPE', ('complex', 'view_as')))


def kind_of(op_name):
    name = op_name.lower()
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return 'element-wise and other'


def stage_times(model, x, device, dtype, steps):
    """Mean seconds of the stem and of each stage over ``steps`` forwards, and what those
    forwards cost the process (:func:`process_usage`)."""
    parts = [('stem', model.patch_embed)] + [(f'stage {i + 1}', s)
                                             for i, s in enumerate(model.layers)]
    totals = defaultdict(float)
    starts = {}

    def pre(name):
        def hook(*_):
            synchronize(device)
            starts[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(*_):
            synchronize(device)
            totals[name] += time.perf_counter() - starts[name]
        return hook

    handles = [h for name, m in parts for h in (m.register_forward_pre_hook(pre(name)),
                                                m.register_forward_hook(post(name)))]
    with torch.inference_mode(), autocast(device, dtype):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(steps):
            model(x)
        synchronize(device)
        after, end = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for h in handles:
        h.remove()
    return ({name: totals[name] / steps for name, _ in parts},
            process_usage(before, after, end - start, steps))


def process_usage(before, after, seconds, steps):
    """Per forward: wall seconds, the process's user and system CPU seconds and its minor page
    faults (a page touched for the first time: on the CPU, what a fresh large tensor costs),
    from ``getrusage`` before and after ``steps`` forwards that took ``seconds``."""
    return dict(wall=seconds / steps, user=(after.ru_utime - before.ru_utime) / steps,
                system=(after.ru_stime - before.ru_stime) / steps,
                faults=(after.ru_minflt - before.ru_minflt) / steps,
                peak_rss_mb=after.ru_maxrss / 1024)


def profiled(model, x, device, dtype, steps, record_shapes=False):
    """torch.profiler over ``steps`` forwards (eval, inference mode, autocast), device kernels
    included on CUDA."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.inference_mode(), autocast(device, dtype), torch.profiler.profile(
            activities=activities, record_shapes=record_shapes) as prof:
        for _ in range(steps):
            model(x)
        synchronize(device)
    return prof


def operator_times(model, x, device, dtype, steps):
    """Seconds per forward by operator kind, and the top operators."""
    events = profiled(model, x, device, dtype, steps).key_averages()
    on_device = device.startswith('cuda')
    # On GPU only the kernels (device-type events) count: the aten ops that launch them report
    # the same GPU time again. On CPU the ops' self time is the time.
    if on_device:
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    rows = [(e.key, (e.self_device_time_total if on_device else e.self_cpu_time_total)
             / 1e6 / steps) for e in events]
    rows = [r for r in rows if r[1] > 0]
    by_kind = defaultdict(float)
    for name, t in rows:
        by_kind[kind_of(name)] += t
    return by_kind, sorted(rows, key=lambda r: -r[1])[:12]


def shape_times(model, x, device, dtype, steps, top):
    """The ``top`` operators by the time they spend themselves (on GPU: in the kernels they
    launch), told apart by their input shapes: which layer's op a kernel of the table above is.
    A pass of its own: recording shapes slows the CPU side the other tables time."""
    prof = profiled(model, x, device, dtype, steps, record_shapes=True)
    on_device = device.startswith('cuda')
    rows = [(e.key, e.input_shapes, (e.self_device_time_total if on_device
                                     else e.self_cpu_time_total) / 1e3 / steps)
            for e in prof.key_averages(group_by_input_shape=True)
            if e.device_type == torch.autograd.DeviceType.CPU]
    return sorted((r for r in rows if r[2] > 0), key=lambda r: -r[2])[:top]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='s')
    p.add_argument('--attn', nargs='+', choices=sorted(ATTN), default=['mix', 'rala'])
    p.add_argument('--shape', type=int, nargs=2, default=[800, 1216], metavar=('H', 'W'),
                   help='input height and width')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--dtype', choices=['float16', 'bfloat16', 'float32'], default='float16')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--by-shape', type=int, default=0, metavar='N',
                   help='also list the N operators that take most time by input shapes')
    p.add_argument('--no-rala-kernel', action='store_true',
                   help='RALA through PyTorch ops even where its Triton kernels run')
    args = p.parse_args(argv)
    dtype = args.dtype
    name = torch.cuda.get_device_name(args.device) if args.device.startswith('cuda') else 'CPU'
    print(f'# RAVLT-{args.arch.upper()} forward, {args.batch}x3x{args.shape[0]}x{args.shape[1]}, '
          f'{args.dtype}, eval, {name}, torch {torch.__version__}, RALA kernel '
          f'{"off" if args.no_rala_kernel else "on where it applies"}\n')
    for attn in args.attn:
        model = RAVLT(args.arch, attn_types=ATTN[attn],
                      rala_kernel=not args.no_rala_kernel).to(args.device).eval()
        x = torch.randn(args.batch, 3, *args.shape, device=args.device)
        with torch.inference_mode(), autocast(args.device, dtype):
            for _ in range(2):
                model(x)
        stages, usage = stage_times(model, x, args.device, dtype, args.steps)
        total = sum(stages.values())
        print(f'## {attn}: {total * 1e3:.1f} ms per forward ({args.batch / total:.1f} img/s)\n')
        if args.device == 'cpu':
            print(f'Process, per forward: wall {usage["wall"]:.2f} s, CPU user '
                  f'{usage["user"]:.2f} s, system {usage["system"]:.2f} s, '
                  f'{usage["faults"]:,.0f} minor page faults; peak resident memory '
                  f'{usage["peak_rss_mb"]:.0f} MB\n')
        print('| part | ms | share |\n|---|---|---|')
        for part, t in stages.items():
            print(f'| {part} | {t * 1e3:.2f} | {t / total:.0%} |')
        by_kind, top = operator_times(model, x, args.device, dtype, args.steps)
        ops_total = sum(by_kind.values())
        print('\n| operator kind | ms | share |\n|---|---|---|')
        for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
            print(f'| {kind} | {t * 1e3:.2f} | {t / ops_total:.0%} |')
        print('\n| top operators / kernels | ms |\n|---|---|')
        for op, t in top:
            print(f'| `{op[:90]}` | {t * 1e3:.2f} |')
        if args.by_shape:
            print('\n| operator | input shapes | ms |\n|---|---|---|')
            for op, shapes, ms in shape_times(model, x, args.device, dtype, args.steps,
                                              args.by_shape):
                print(f'| `{op}` | `{shapes}` | {ms:.2f} |')
        print()


if __name__ == '__main__':
    main()
