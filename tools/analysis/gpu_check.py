"""RAVLT on one GPU in one short run: correctness checks and timings against Swin-T and ConvNeXt-T.

    python tools/analysis/gpu_check.py [--device cuda] [--budget 420] [--work-dir DIR]
        [--models ravlt_s swin_t ...] [--sizes 800x1216 512] [--dtypes float16 bfloat16 float32]
        [--modes eager compiled] [--quick]

Made for a GPU machine that is lent for minutes and starts bare (torch, timm, triton; no mm
packages: `bash tools/analysis/gpu_check.sh` installs mmengine from a wheel bundle first). In the
order below, most important first; once ``--budget`` seconds have passed, what is left is listed as
not run:
  1. checks: fast == reference path in fp32 (outputs and gradients) with the CPU tests' exact cases
     and tolerances and with RAVLT-T/S at ``--check-size``; fp16 / bf16 autocast outputs close to
     fp32; fp16 AMP training steps (GradScaler, AdamW) that stay finite;
  2. timings, eager, at the first of ``--sizes``: per model and autocast dtype the batch-1
     latency, the throughput at ``--throughput-batch`` (8), a forward+backward step at
     ``--train-batch`` (2, the paper's images per GPU) and the peak memory of each
     (``torch.cuda.max_memory_allocated``); on CUDA the RAVLT rows again with the fused RALA
     kernel switched off (impl ``fast-nokernel``, ``--nokernel-dtypes``);
  3. ``torch.compile``'d throughput (``--compile-*``: each metric and size is a compilation);
  4. eager at the other sizes, then the reference path of RAVLT (``--reference-sizes``).
Swin-T and ConvNeXt-T are mmdet's / mmpretrain's where those import, else timm's (the tables say
which). Every case runs in a worker process with its own time limit; a case that fails (out of
memory, a compile error, a time-out) becomes a row with the reason and the run goes on.
Writes gpu_check.md, gpu_check.csv (timings) and gpu_check_checks.csv to the work dir.
"""
import argparse
import csv
import datetime
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import selectors
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ravlt_dense.analysis import bench
from ravlt_dense.analysis.timing import (autocast, cpu_model, cuda_peak_mb, median_seconds,
                                         parse_size)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

RESULT_TAG = 'GPU_CHECK_ROW:'
RAVLT_MODELS = ('ravlt_t', 'ravlt_s', 'ravlt_t_rala', 'ravlt_s_rala')
DEFAULT_MODELS = ('ravlt_s', 'ravlt_s_rala', 'swin_t', 'convnext_t', 'ravlt_t', 'ravlt_t_rala')
# tests/test_models/test_backbones/test_ravlt.py: its tiny arch, input sizes and tolerances
CPU_TEST_ARCH = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                     mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.])
TOLERANCES = dict(
    output_abs=2e-5,     # test_fast_backbone_matches_reference: max |fast - reference|
    grad_rel=1e-4,       # test_fast_backbone_gradients_match_reference: / max(1, max |ref|)
    autocast_rel=0.05,   # test_autocast_bf16_stays_finite_and_close_to_fp32: relative L2 error
)
# The real variants at real sizes add more layers' rounding than the test's tiny arch: the CPU
# benchmark (tools/analysis/benchmark_backbone.py) measured up to 7e-5 for RAVLT-S at 800x1216.
REAL_OUTPUT_ABS = 1e-4
PERF_COLUMNS = ('model', 'description', 'source', 'impl', 'mode', 'dtype', 'input',
                'latency_b1_ms', 'throughput_img_s', 'throughput_batch', 'train_step_ms',
                'train_batch', 'peak_b1_MB', 'peak_throughput_MB', 'peak_train_MB', 'params_M',
                'seconds', 'note')
CHECK_COLUMNS = ('check', 'model', 'input', 'result', 'value', 'limit', 'detail')


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def _timm(name: str, size: Tuple[int, int]) -> nn.Module:
    import timm
    kwargs = dict(img_size=size) if name.startswith('swin') else {}
    return timm.create_model(name, pretrained=False, features_only=True, **kwargs)


def build_model(name: str, size: Tuple[int, int]) -> Tuple[nn.Module, str]:
    """The backbone and where it comes from. Swin-T / ConvNeXt-T: the mm implementation where it
    imports (bench's zoo), else timm's; RAVLT: this project's."""
    if name in RAVLT_MODELS:
        return bench.BACKBONES[name][1](), 'ravlt_dense'
    timm_names = dict(swin_t='swin_tiny_patch4_window7_224', convnext_t='convnext_tiny')
    if name not in timm_names:
        raise ValueError(f'unknown model {name!r}; choose from {RAVLT_MODELS + tuple(timm_names)}')
    if bench.missing_requirement(name, 'backbone') is None:
        return bench.BACKBONES[name][1](), bench.BACKBONES[name][2][0]
    if importlib.util.find_spec('timm') is None:
        raise ModuleNotFoundError(f'{name}: neither {bench.BACKBONES[name][2][0]} nor timm is '
                                  'installed')
    return _timm(timm_names[name], size), f'timm {importlib.import_module("timm").__version__}'


def description(name: str) -> str:
    return bench.BACKBONES[name][0].split(' (mm')[0] if name in bench.BACKBONES else name


# --------------------------------------------------------------------------------------------
# Worker: one case at a time
# --------------------------------------------------------------------------------------------
def _loss(outputs) -> torch.Tensor:
    """A loss that reaches every output and every parameter: a fixed linear read-out."""
    total = 0.
    for out in outputs:
        weight = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
        total = total + (out.float() * weight).sum()
    return total


def _peak_mb(fn: Callable[[], None], device) -> Optional[float]:
    """Peak memory of one call over what was allocated before it (CUDA only)."""
    if device.type == 'cuda':
        return cuda_peak_mb(fn, device)
    fn()
    return None


def perf_case(case: dict, device: torch.device) -> dict:
    h, w = case['size']
    torch.manual_seed(0)
    model, source = build_model(case['model'], (h, w))
    model = model.to(device)
    if case['impl'] == 'reference':
        model.set_attn_impl('reference')
    elif case['impl'] == 'fast-nokernel':  # RALA through PyTorch ops even where triton runs
        model.set_rala_kernel(False)
    row = dict(source=source, params_M=sum(p.numel() for p in model.parameters()) / 1e6)
    run = model
    if case['mode'] == 'compiled':
        # RAVLT's small helpers (e.g. _split_heads) meet one shape per stage and grad mode:
        # past dynamo's default limit of 8 recompilations they would silently run eagerly
        torch._dynamo.config.recompile_limit = 64
        run = torch.compile(model, dynamic=False)
    warmup, repeat = case['warmup'], case['repeat']
    metrics = case['metrics']

    def forward(batch):
        x = torch.randn(batch, 3, h, w, device=device)

        def call():
            with torch.inference_mode(), autocast(device, case['dtype']):
                run(x)
        return call

    # training first: a model compiled under inference_mode could not train afterwards
    # ("Inference tensors cannot be saved for backward", torch 2.13, RAVLT-T on CPU)
    if 'train' in metrics:
        model.train()
        x = torch.randn(case['train_batch'], 3, h, w, device=device)

        def step():
            with autocast(device, case['dtype']):
                loss = _loss(run(x))
            loss.backward()
            model.zero_grad(set_to_none=True)
        row['peak_train_MB'] = _peak_mb(step, device)  # also the first warm-up (and compile)
        row['train_step_ms'] = median_seconds(step, max(repeat // 2, 1), warmup, device) * 1e3
    model.eval()
    if 'latency' in metrics:
        call = forward(1)
        row['peak_b1_MB'] = _peak_mb(call, device)
        row['latency_b1_ms'] = median_seconds(call, repeat, warmup, device) * 1e3
    if 'throughput' in metrics:
        batch = case['throughput_batch']
        call = forward(batch)
        row['peak_throughput_MB'] = _peak_mb(call, device)
        row['throughput_img_s'] = batch / median_seconds(call, max(repeat // 2, 1), warmup, device)
    return row


def _max_abs(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


def equal_case(case: dict, device: torch.device) -> List[dict]:
    """Fast vs reference in fp32, outputs and gradients; autocast outputs against fp32."""
    from ravlt_dense.models.backbones.ravlt import RAVLT
    from ravlt_dense.ops import rala_kernel_applies
    name = case['model']
    torch.manual_seed(0)
    if name.startswith('cpu_test'):  # the CPU tests' own cases
        attn = bench.RALA_ONLY if name.endswith('rala') else ('rala', 'rala', 'softmax',
                                                              'softmax')
        model = RAVLT(CPU_TEST_ARCH, attn_types=attn, drop_path_rate=0.).to(device)
        out_size, grad_size, out_tol = (1, 96, 80), (2, 64, 72), TOLERANCES['output_abs']
    else:
        model = bench.BACKBONES[name][1]().to(device)
        for m in model.modules():  # stochastic depth would differ between the two passes
            if hasattr(m, 'drop_prob'):
                m.drop_prob = 0.
        h, w = case['size']
        out_size, grad_size, out_tol = (1, h, w), (2, h, w), REAL_OUTPUT_ABS
    x = torch.randn(out_size[0], 3, *out_size[1:], device=device)
    model.eval()
    with torch.no_grad():
        outs = {impl: model.set_attn_impl(impl)(x) for impl in ('fast', 'reference')}
        amp = {}
        if not name.startswith('cpu_test'):
            model.set_attn_impl('fast')
            for dtype in case['dtypes']:
                with autocast(device, dtype):
                    amp[dtype] = model(x)
    where = f'{out_size[1]}x{out_size[2]}'
    kernel = 'with' if rala_kernel_applies(x) else 'without'
    rows = [dict(check='fast == reference, outputs (fp32)', model=name, input=where,
                 value=_max_abs(outs['fast'], outs['reference']), limit=out_tol,
                 detail=f'max |fast - reference|, fast {kernel} the fused RALA kernel')]
    for dtype, out in amp.items():
        rel = max(((a.float() - b).norm() / b.norm()).item() for a, b in zip(out, outs['fast']))
        finite = all(torch.isfinite(a).all().item() for a in out)
        rows.append(dict(check=f'{dtype} autocast vs fp32, outputs', model=name, input=where,
                         value=rel if finite else float('inf'), limit=TOLERANCES['autocast_rel'],
                         detail='max ||amp - fp32|| / ||fp32|| over the outputs'
                         + ('' if finite else '; NOT FINITE')))

    model.train()
    xg = torch.randn(grad_size[0], 3, *grad_size[1:], device=device, requires_grad=True)
    grads = []
    for impl in ('fast', 'reference'):
        model.set_attn_impl(impl).zero_grad()
        xg.grad = None
        _loss(model(xg)).backward()
        grads.append({'input': xg.grad.clone(),
                      **{n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}})
    worst, worst_name = 0., ''
    for key, fast in grads[0].items():
        ref = grads[1][key]
        err = (fast - ref).abs().max().item() / max(1., ref.abs().max().item())
        if err > worst:
            worst, worst_name = err, key
    rows.append(dict(check='fast == reference, gradients (fp32)', model=name,
                     input=f'{grad_size[0]}x{grad_size[1]}x{grad_size[2]}', value=worst,
                     limit=TOLERANCES['grad_rel'],
                     detail=f'max |fast - ref| / max(1, max |ref|) over {len(grads[0])} tensors'
                     f' (worst: {worst_name or "-"})'))
    return rows


def amp_case(case: dict, device: torch.device) -> List[dict]:
    """fp16 autocast training steps with GradScaler and AdamW: loss, gradients and weights stay
    finite and the scaler does not skip every step."""
    torch.manual_seed(0)
    model = bench.BACKBONES[case['model']][1]().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type)
    h, w = case['size']
    x = torch.randn(case['train_batch'], 3, h, w, device=device)
    losses, skipped, grads_finite = [], 0, True
    for _ in range(case['steps']):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, 'float16'):
            outs = model(x)
            loss = sum(o.float().pow(2).mean() for o in outs)  # pulls features towards 0
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads_finite &= all(torch.isfinite(p.grad).all().item() for p in model.parameters()
                            if p.grad is not None)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped += scaler.get_scale() < scale  # a step with inf/nan gradients lowers the scale
        losses.append(loss.item())
    weights_finite = all(torch.isfinite(p).all().item() for p in model.parameters())
    ok = all(map(math.isfinite, losses)) and weights_finite and skipped < len(losses)
    return [dict(check='fp16 AMP training steps (GradScaler, AdamW) finite', model=case['model'],
                 input=f'{case["train_batch"]}x{h}x{w}', value=float(ok), limit=1.0,
                 detail=f'losses {", ".join(f"{v:.4g}" for v in losses)}; skipped steps '
                 f'{skipped}/{len(losses)}; gradients finite after unscale in every step: '
                 f'{grads_finite}; weights finite: {weights_finite}; final scale '
                 f'{scaler.get_scale():g}')]


def run_case(case: dict, device: torch.device) -> List[dict]:
    """One case -> rows; any failure becomes a row saying why."""
    start = time.perf_counter()
    try:
        if case['kind'] == 'perf':
            rows = [perf_case(case, device)]
        elif case['kind'] == 'equal':
            rows = equal_case(case, device)
        else:
            rows = amp_case(case, device)
        note = ''
    except Exception as exc:  # OOM, compile errors, missing packages: a row, not a crash
        rows = [{}]
        kind = 'out of memory' if 'out of memory' in str(exc).lower() else type(exc).__name__
        note = f'{kind}: {str(exc).splitlines()[0] if str(exc) else ""}'[:300]
    finally:
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        if case.get('mode') == 'compiled':
            torch._dynamo.reset()
    for row in rows:
        row.update(case_id=case['id'], seconds=time.perf_counter() - start)
        if note:
            row['note'] = note
    return rows


def worker_main() -> None:
    import warnings
    warnings.filterwarnings('ignore')
    cases = json.load(sys.stdin)
    device = torch.device(cases[0]['device'])
    if device.type == 'cuda':
        # fp32 means fp32 (the checks compare paths at the tests' tolerances): no TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    for case in cases:
        # timings: the fastest convolution algorithms; checks: the same ones in both paths
        torch.backends.cudnn.benchmark = case['kind'] == 'perf'
        torch.backends.cudnn.deterministic = case['kind'] != 'perf'
        print(RESULT_TAG + json.dumps(run_case(case, device)), flush=True)


# --------------------------------------------------------------------------------------------
# Parent: plan, run the workers within the budget, report
# --------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                   help=f'from {RAVLT_MODELS + ("swin_t", "convnext_t")}')
    p.add_argument('--sizes', nargs='+', type=parse_size, help='HxW or S; default 800x1216 512')
    p.add_argument('--dtypes', nargs='+', choices=['float16', 'bfloat16', 'float32'],
                   help='autocast dtypes; default float16 bfloat16 float32')
    p.add_argument('--modes', nargs='+', choices=['eager', 'compiled'],
                   help='default: eager compiled (--quick: eager)')
    p.add_argument('--no-reference', action='store_true', help='no timings of the reference path')
    p.add_argument('--nokernel-dtypes', nargs='+', default=['float16'],
                   help='dtypes of the RAVLT timings with the fused RALA kernel switched off '
                   '(impl fast-nokernel, first size, CUDA only); default float16')
    p.add_argument('--reference-sizes', nargs='+', type=parse_size,
                   help='sizes of the reference-path timings; default the first of --sizes')
    p.add_argument('--compile-sizes', nargs='+', type=parse_size,
                   help='sizes of the compiled cases; default the first of --sizes')
    p.add_argument('--compile-dtypes', nargs='+', default=['float16'])
    p.add_argument('--compile-models', nargs='+', default=list(DEFAULT_MODELS[:4]),
                   help='models of the compiled cases (those also in --models); default: '
                   'RAVLT-S both mixes, Swin-T, ConvNeXt-T')
    p.add_argument('--compile-metrics', nargs='+', choices=['latency', 'throughput', 'train'],
                   default=['throughput'], help='each metric is one more compilation')
    p.add_argument('--throughput-batch', type=int, default=8)
    p.add_argument('--train-batch', type=int, default=2)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeat', type=int, default=10, help='timed batch-1 passes; half as many '
                   'for throughput and training steps')
    p.add_argument('--check-size', type=parse_size, default=(512, 512),
                   help='input of the fast == reference check of the real variants')
    p.add_argument('--amp-steps', type=int, default=5)
    p.add_argument('--amp-size', type=parse_size, default=(800, 1216))
    p.add_argument('--no-checks', action='store_true')
    p.add_argument('--budget', type=float, default=420,
                   help='seconds for all cases; the rest is listed as not run')
    p.add_argument('--case-timeout', type=float, default=90, help='seconds per eager case')
    p.add_argument('--compile-timeout', type=float, default=180,
                   help='seconds per compiled case')
    p.add_argument('--quick', action='store_true',
                   help='the smallest settings that run every part (a rehearsal, e.g. on CPU): '
                   '64x96 input, batches of 2, one timed pass, eager unless --modes says otherwise')
    p.add_argument('--work-dir', default='work_dirs/gpu_check')
    p.add_argument('--list', action='store_true', help='print the planned cases in their order '
                   'and exit')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    if args.quick:
        args.sizes = args.sizes or [(64, 96)]
        args.check_size = args.amp_size = (64, 96)
        args.modes = args.modes or ['eager']
        args.throughput_batch, args.warmup, args.repeat, args.amp_steps = 2, 1, 1, 2
    args.modes = args.modes or ['eager', 'compiled']
    args.sizes = args.sizes or [(800, 1216), (512, 512)]
    args.dtypes = args.dtypes or ['float16', 'bfloat16', 'float32']
    args.compile_sizes = args.compile_sizes or args.sizes[:1]
    args.reference_sizes = args.reference_sizes or args.sizes[:1]
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error('--device cuda but torch.cuda.is_available() is False (use --device cpu to '
                'rehearse)')
    unknown = set(args.models) - set(RAVLT_MODELS) - {'swin_t', 'convnext_t'}
    if unknown:
        p.error(f'unknown --models {sorted(unknown)}; choose from '
                f'{RAVLT_MODELS + ("swin_t", "convnext_t")}')
    return args


def plan(args) -> List[dict]:
    """All cases, most important first."""
    cases = []
    timing = dict(kind='perf', warmup=args.warmup, repeat=args.repeat,
                  throughput_batch=args.throughput_batch, train_batch=args.train_batch)
    ravlts = [m for m in args.models if m in RAVLT_MODELS]
    if not args.no_checks:
        cases += [dict(kind='equal', model=f'cpu_test_arch{mix}', dtypes=[])
                  for mix in ('', '_rala')]
        cases += [dict(kind='amp', model=m, size=args.amp_size, train_batch=args.train_batch,
                       steps=args.amp_steps) for m in ('ravlt_s', 'ravlt_s_rala') if m in ravlts]
        cases += [dict(kind='equal', model=m, size=args.check_size,
                       dtypes=[d for d in args.dtypes if d != 'float32']) for m in ravlts]
    metrics = ['latency', 'throughput', 'train']
    eager = [dict(timing, model=m, impl='fast', mode='eager', size=s, dtype=d, metrics=metrics)
             for s in args.sizes for d in args.dtypes for m in args.models]
    first_size = [c for c in eager if c['size'] == args.sizes[0]]
    if 'eager' in args.modes:
        cases += first_size
    if 'eager' in args.modes and args.device.startswith('cuda'):
        # the fast path without its fused RALA kernel: what the kernel gains
        cases += [dict(c, impl='fast-nokernel') for c in first_size
                  if c['model'] in ravlts and c['dtype'] in args.nokernel_dtypes]
    if 'compiled' in args.modes:
        cases += [dict(timing, model=m, impl='fast', mode='compiled', size=s, dtype=d,
                       metrics=args.compile_metrics)
                  for s in args.compile_sizes for d in args.compile_dtypes
                  for m in args.models if m in args.compile_models]
    if 'eager' in args.modes:
        cases += [c for c in eager if c['size'] != args.sizes[0]]
        if not args.no_reference:
            cases += [dict(timing, model=m, impl='reference', mode='eager', size=s, dtype=d,
                           metrics=metrics)
                      for s in args.reference_sizes for d in args.dtypes for m in ravlts]
    for i, case in enumerate(cases):
        case.update(id=i, device=args.device)
    return cases


def _case_rows(case: dict, note: str) -> List[dict]:
    return [dict(case_id=case['id'], note=note)]


class Worker:
    """A worker process fed with the remaining cases; its result lines are read with a time-out.
    stderr goes to a file: a full pipe would block the worker and look like a hang."""

    def __init__(self, cases: List[dict], log_path: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
        self.log_path = log_path
        with open(log_path, 'w') as log:
            self.proc = subprocess.Popen([sys.executable, osp.abspath(__file__), '--worker'],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env, cwd=REPO_ROOT)
        self.proc.stdin.write(json.dumps(cases).encode())
        self.proc.stdin.close()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.buffer = b''

    def next_rows(self, timeout: float):
        """The rows of the next case; None after ``timeout`` s; '' when the worker has died."""
        deadline = time.time() + timeout
        while True:
            while b'\n' not in self.buffer:
                left = deadline - time.time()
                if left <= 0 or not self.selector.select(timeout=left):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    return ''
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b'\n', 1)
            text = line.decode(errors='replace')
            if text.startswith(RESULT_TAG):  # anything else on stdout is not ours
                return json.loads(text[len(RESULT_TAG):])

    def last_error(self) -> str:
        self.proc.wait()
        with open(self.log_path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        return f'worker died ({self.proc.returncode}): {lines[-1][:300] if lines else ""}'

    def close(self) -> None:
        self.selector.close()
        self.proc.kill()
        self.proc.wait()


def run_all(cases: List[dict], args) -> Dict[int, List[dict]]:
    """Cases in order through worker processes. A worker that times out or dies is replaced by
    a fresh one from the next case on; the global budget ends the run."""
    results: Dict[int, List[dict]] = {}
    start = time.time()
    pending = list(cases)
    log_path = osp.join(args.work_dir, 'worker.log')
    while pending:
        if time.time() - start > args.budget:
            for case in pending:
                results[case['id']] = _case_rows(case, f'not run: the {args.budget:.0f} s '
                                                 'budget was spent')
            break
        worker = Worker(pending, log_path)
        while pending:
            case = pending[0]
            limit = args.compile_timeout if case.get('mode') == 'compiled' else args.case_timeout
            rows = worker.next_rows(min(limit, args.budget - (time.time() - start)))
            if rows is None:
                why = ('stopped: the budget was spent' if time.time() - start > args.budget
                       else f'timed out after {limit:.0f} s')
            elif rows == '':
                why = worker.last_error()
            else:
                why = None
            results[case['id']] = rows if why is None else _case_rows(case, why)
            pending.pop(0)
            status = why or results[case['id']][0].get('note') or 'ok'
            print(f'[{time.time() - start:5.0f} s] {describe(case)}: {status}', flush=True)
            if why is not None:  # the next case in a fresh worker
                break
        worker.close()
    return results


def describe(case: dict) -> str:
    size = 'x'.join(map(str, case['size'])) if 'size' in case else ''
    if case['kind'] == 'perf':
        return f"{case['model']} {case['impl']} {case['mode']} {case['dtype']} {size}"
    return f"{case['kind']} {case['model']} {size}"


def collect(cases: List[dict], results: Dict[int, List[dict]]) -> Tuple[List[dict], List[dict]]:
    perf, checks = [], []
    for case in cases:
        for row in results.get(case['id'], _case_rows(case, 'no result')):
            if case['kind'] == 'perf':
                perf.append(dict(
                    row, model=case['model'], description=description(case['model']),
                    impl=case['impl'], mode=case['mode'], dtype=case['dtype'],
                    input='x'.join(map(str, case['size'])),
                    throughput_batch=case['throughput_batch'], train_batch=case['train_batch']))
                continue
            if 'check' not in row:  # the case failed before it produced its rows
                row = dict(check=case['kind'], model=case['model'], detail=row.get('note', ''))
            if 'value' not in row:
                result = 'not run'
            elif math.isfinite(row['value']) and (
                    row['value'] >= row['limit'] if row['check'].startswith('fp16 AMP')
                    else row['value'] <= row['limit']):
                result = 'pass'
            else:
                result = 'FAIL'
            checks.append(dict(row, result=result))
    return perf, checks


def write_csv(rows: List[dict], columns, path: str) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value, digits=1) -> str:
    if value is None or value == '' or (isinstance(value, float) and math.isnan(value)):
        return '–'
    return f'{value:,.{digits}f}' if isinstance(value, (int, float)) else str(value)


def _num(value) -> str:
    if not isinstance(value, (int, float)):
        return '–'
    return f'{value:.2e}' if 0 < abs(value) < 1e-2 else f'{value:.3g}'


def ratio_lines(perf: List[dict]) -> List[str]:
    """RAVLT-S throughput over Swin-T's, per (input, dtype, mode), with the issue's targets."""
    lines = []
    index = {(r['model'], r['impl'], r['mode'], r['dtype'], r['input']): r.get('throughput_img_s')
             for r in perf}
    for (model, impl, mode, dtype, size), swin in index.items():
        if model != 'swin_t' or not swin:
            continue
        parts = []
        for name, target in (('ravlt_s', 1.0), ('ravlt_s_rala', 1.3), ('ravlt_t', None),
                             ('convnext_t', None)):
            own = index.get((name, 'fast', mode, dtype, size))
            if own:
                goal = '' if target is None else (
                    f' (target >= {target}: {"met" if own / swin >= target else "NOT met"})')
                parts.append(f'{description(name)} {own / swin:.2f}x{goal}')
        if parts:
            lines.append(f'- {size}, {dtype}, {mode}: ' + '; '.join(parts))
    return lines


def markdown(perf: List[dict], checks: List[dict], args, elapsed: float) -> str:
    device = torch.device(args.device)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        machine = f'{name}, CUDA {torch.version.cuda}'
    else:
        name = machine = f'CPU {cpu_model()}, {torch.get_num_threads()} threads'
    timm = importlib.util.find_spec('timm') and importlib.import_module('timm').__version__
    lines = [f'# GPU check on {name}, {datetime.datetime.now():%Y-%m-%d %H:%M}', '',
             f"Command: `python {' '.join(sys.argv)}` ({elapsed:.0f} s)  ",
             f'Machine: {machine}; torch {torch.__version__}, Python '
             f'{platform.python_version()}, timm {timm or "not installed"}', '',
             '## Checks', '',
             '| check | model | input | result | value | limit | detail |',
             '|---|---|---|---|---|---|---|']
    for r in checks:
        lines.append(f"| {r['check']} | {r['model']} | {r.get('input', '')} | {r['result']} | "
                     f"{_num(r.get('value'))} | {_num(r.get('limit'))} | {r.get('detail', '')} |")
    lines += ['', '## Timings', '',
              '| model | source | path | mode | dtype | input | latency b1 (ms) | '
              'throughput (img/s) | train step (ms) | peak b1 / throughput / train (MB) | note |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in perf:
        peaks = ' / '.join(_fmt(r.get(k), 0) for k in ('peak_b1_MB', 'peak_throughput_MB',
                                                         'peak_train_MB'))
        lines.append(
            f"| {r['description']} | {r.get('source', '–')} | {r['impl']} | {r['mode']} | "
            f"{r['dtype']} | {r['input']} | {_fmt(r.get('latency_b1_ms'))} | "
            f"{_fmt(r.get('throughput_img_s'))} (b{r['throughput_batch']}) | "
            f"{_fmt(r.get('train_step_ms'))} (b{r['train_batch']}) | {peaks} | "
            f"{r.get('note', '')} |")
    ratios = ratio_lines(perf)
    if ratios:
        lines += ['', '## Throughput against Swin-T (same run)', ''] + ratios
    lines += ['', '- Latency: median of batch-1 forward passes (eval, `torch.inference_mode`); '
              'throughput: images/s of forward passes at the batch shown; train step: forward + '
              'backward of a linear read-out of all four outputs at the batch shown (train mode, '
              'no optimizer). dtype = autocast dtype (float32: none; no TF32).',
              '- Peak memory: `torch.cuda.max_memory_allocated` of the first pass over what the '
              'model and input held before it (CUDA only).',
              '- Compiled: `torch.compile(model, dynamic=False)`; its first pass (the '
              'compilation) is a warm-up, not timed.']
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    start = time.time()
    cases = plan(args)
    if args.list:
        print('\n'.join(f"{c['id']:3d} {describe(c)}" for c in cases))
        return cases
    os.makedirs(args.work_dir, exist_ok=True)
    print(f'{len(cases)} cases, budget {args.budget:.0f} s', flush=True)
    results = run_all(cases, args)
    perf, checks = collect(cases, results)
    write_csv(perf, PERF_COLUMNS, osp.join(args.work_dir, 'gpu_check.csv'))
    write_csv(checks, CHECK_COLUMNS, osp.join(args.work_dir, 'gpu_check_checks.csv'))
    text = markdown(perf, checks, args, time.time() - start)
    with open(osp.join(args.work_dir, 'gpu_check.md'), 'w') as f:
        f.write(text)
    print(text)
    print(f'wrote {args.work_dir}/gpu_check.md, gpu_check.csv, gpu_check_checks.csv')
    return perf, checks


if __name__ == '__main__':
    main()
