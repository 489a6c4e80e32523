"""Peak GPU memory of RAVLT's softmax attention in fp32, by SDPA backend and input layout.

    python tools/analysis/probe_sdpa_memory.py [--size 800x1216] [--batch 1]

The GPU check found the released mix's first fp32 forward (no autocast) peaking at tens of GB
where fp16 needs a few hundred MB (docs/gpu.md). This probe separates the suspects: the
attention call alone at the shapes of RAVLT-S's softmax stages (q, k as the fast path's rotated
copies, v as a view of the channels-last qkvo map, or all contiguous) under each backend, and
the whole backbone with cuDNN's convolution benchmarking on and off, and the GPU check's own
sequence (TF32 off in cuDNN, a training step first) with one setting toggled at a time. Prints a
Markdown table.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ravlt_dense.analysis.timing import cuda_peak_mb, parse_size

BACKENDS = {'default': None, 'efficient': SDPBackend.EFFICIENT_ATTENTION,
            'math': SDPBackend.MATH, 'cudnn': SDPBackend.CUDNN_ATTENTION,
            'flash': SDPBackend.FLASH_ATTENTION}


def measure(fn, device):
    """(peak MB, ms, error) of one call of ``fn``."""
    torch.cuda.empty_cache()
    start = time.perf_counter()
    try:
        peak = cuda_peak_mb(fn, device)
    except RuntimeError as exc:
        return None, None, str(exc).splitlines()[0][:80]
    return peak, (time.perf_counter() - start) * 1e3, ''


def attention_rows(batch, height, width, dim, heads, device):
    """The attention of one stage: (B, heads, N, d) q, k contiguous, v a channels-last view."""
    qkvo = torch.randn(batch, 4 * dim, height, width, device=device).contiguous(
        memory_format=torch.channels_last)
    v_view = qkvo[:, 2 * dim:3 * dim].flatten(2).transpose(1, 2).unflatten(
        -1, (heads, -1)).transpose(1, 2)
    q = torch.randn_like(v_view.contiguous())
    k = torch.randn_like(q)
    rows = []
    for layout, v in (('v channels-last view', v_view), ('all contiguous', v_view.contiguous())):
        for name, backend in BACKENDS.items():
            def call():
                with torch.no_grad():
                    if backend is None:
                        F.scaled_dot_product_attention(q, k, v)
                    else:
                        with sdpa_kernel(backend):
                            F.scaled_dot_product_attention(q, k, v)
            peak, ms, err = measure(call, device)  # the first call, as in the GPU check
            rows.append((f'SDPA {height}x{width} tokens, {heads} heads', layout, name, peak, ms,
                         err))
    return rows


def backbone_rows(batch, size, device):
    from ravlt_dense.models.backbones.ravlt import RAVLT
    rows = []
    for attn in (('rala', 'rala', 'softmax', 'softmax'), ('rala', ) * 4):
        model = RAVLT('s', attn_types=attn).to(device).eval()
        x = torch.randn(batch, 3, *size, device=device)
        for benchmark in (False, True):
            torch.backends.cudnn.benchmark = benchmark
            torch._C._cuda_clearCublasWorkspaces()

            def call():
                with torch.no_grad():
                    model(x)
            peak, ms, err = measure(call, device)  # the first forward, as the GPU check's
            peak2, ms2, _ = measure(call, device)
            mix = 'released mix' if 'softmax' in attn else 'all-RALA'
            second = '-' if peak2 is None else f'{peak2:.0f} MB, {ms2:.0f} ms'
            rows.append((f'RAVLT-S {mix} fp32 b{batch}', f'cudnn.benchmark={benchmark}',
                         'first forward', peak, ms, f'second: {second} {err}'))
        torch.backends.cudnn.benchmark = False
    return rows


def as_gpu_check_rows(batch, size, device):
    """The GPU check's sequence for one model, fresh: TF32 off in cuDNN too, benchmarking on,
    a training step (forward + backward at batch 2) first, then the first inference forward; each
    setting toggled alone, so that the row that jumps names the cause."""
    from ravlt_dense.models.backbones.ravlt import RAVLT
    rows = []
    settings = [dict(cudnn_tf32=False, train_first=True), dict(cudnn_tf32=True, train_first=True),
                dict(cudnn_tf32=False, train_first=False)]
    for setting in settings:
        torch.backends.cudnn.allow_tf32 = setting['cudnn_tf32']
        torch.backends.cudnn.benchmark = True
        model = RAVLT('s').to(device)
        if setting['train_first']:
            xt = torch.randn(2, 3, *size, device=device)

            def step():
                sum(o.float().mean() for o in model.train()(xt)).backward()
                model.zero_grad(set_to_none=True)
            train_peak, _, err = measure(step, device)
        else:
            train_peak, err = None, ''
        x = torch.randn(batch, 3, *size, device=device)

        def call():
            with torch.inference_mode():
                model.eval()(x)
        peak, ms, err2 = measure(call, device)
        train = '-' if train_peak is None else f'{train_peak:.0f} MB'
        rows.append((f'RAVLT-S released mix fp32 b{batch}, as the GPU check',
                     ', '.join(f'{k}={v}' for k, v in setting.items()), 'first forward', peak,
                     ms, f'training step b2 before: {train} {err} {err2}'.strip()))
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = True, False
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', type=parse_size, default=(800, 1216))
    p.add_argument('--batch', type=int, default=1)
    args = p.parse_args()
    device = torch.device('cuda')
    torch.backends.cuda.matmul.allow_tf32 = False
    h, w = args.size
    rows = []
    for stride, dim, heads in ((16, 320, 5), (32, 512, 8)):  # RAVLT-S's softmax stages
        rows += attention_rows(args.batch, -(-h // stride), -(-w // stride), dim, heads, device)
    rows += backbone_rows(args.batch, args.size, device)
    rows += as_gpu_check_rows(args.batch, args.size, device)
    print(f'# fp32 peak memory, {torch.cuda.get_device_name(device)}, torch {torch.__version__}'
          '\n\n| what | layout / setting | backend | peak MB | ms | note |'
          '\n|---|---|---|---|---|---|')
    for what, layout, backend, peak, ms, note in rows:
        peak_s = '-' if peak is None else f'{peak:.0f}'
        ms_s = '-' if ms is None else f'{ms:.1f}'
        print(f'| {what} | {layout} | {backend} | {peak_s} | {ms_s} | {note} |')


if __name__ == '__main__':
    main()
