"""One case of the benchmark, measured in a fresh child process.

A case is one model (RAVLT: on one of its paths) at one input shape, eager or compiled. Each
case runs in its own Python process (``python -m ravlt_dense.tools.benchmark.case SPEC_JSON``),
so peak memory is that model's alone (allocator caches, earlier models and the parent do not
leak in), and a crash, a missing package or a time-out costs that case, not the run. The child
prints each measurement as soon as it has it: a case stopped by its time limit or by the run's
budget keeps what it measured. Two budgets stop a case cleanly: ``max_pass_s`` (the child
announces each forward pass; one running longer is stopped) and ``max_memory_gb`` (CPU: the
child's resident memory, watched by the parent; CUDA: torch's share of the GPU, an
out-of-memory error in the child).
"""
import json
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .models import REPO, build, description
from .timing import (
    autocast,
    device_name,
    interleaved_seconds,
    latency_stats,
    peak_memory,
    synchronize,
)

RESULT_TAG = 'BENCH_RESULT_JSON:'
PASS_TAG = 'BENCH_PASS'  # the child starts a forward pass: the per-pass time budget starts
# How often the parent reads a CPU case's resident memory against its memory budget.
MEMORY_POLL_S = 0.05


def _readout(outputs) -> torch.Tensor:
    """A scalar that reaches every output (the backward's cost does not depend on the loss)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float().sum()
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return sum(_readout(o) for o in outputs if isinstance(o, (torch.Tensor, list, tuple, dict)))


def _case_row(spec: dict, device: str) -> dict:
    """The columns that name the case, shared by its measured rows and a row saying it failed."""
    h, w = spec['shape']
    return dict(model=spec['name'], description=description(spec['name'], spec['level']),
                level=spec['level'], input=f'{h}x{w}', pixels=h * w, device=device,
                dtype=spec['dtype'], path=spec.get('path') or '')


def measure(spec: dict, emit: Callable[[dict], None],
            on_pass: Callable[[], None] = lambda: None) -> None:
    """Measure one case, ``emit``-ting each row as soon as it is measured.

    ``spec``: name, level, shape (h, w), device, dtype, batches (inference batch sizes),
    train_batch (0: none), warmup, repeat, flops (bool), path (one of PATHS; None for models
    without RAVLT), compile (a torch.compile backend, or None for the eager case); optional:
    profile (bool: where a model holds RAVLT, one more inference pass at the smallest batch
    gives each stage's share of the time, ``forward_shares``), max_memory_gb (CUDA: torch may
    use no more of the GPU). ``on_pass`` is called before each eager forward pass.
    Eager: a training step (forward + backward) at ``train_batch`` first (a model that ran under
    inference_mode first would hold inference tensors), then inference at each batch. Compiled:
    inference at the largest batch, timed in turn with the eager model.
    """
    device = torch.device(spec['device'])
    if device.type == 'cuda' and spec.get('max_memory_gb'):
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(
            min(spec['max_memory_gb'] * 2**30 / total, 1.), device)
    h, w = spec['shape']
    batches, train_batch = sorted(spec['batches']), spec.get('train_batch', 0)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # the fastest convolution algorithms
    torch.manual_seed(0)
    model = build(spec['name'], spec['level'], max(batches + [train_batch]), (h, w)).to(device)
    if spec.get('path'):
        for m in model.modules():
            if hasattr(m, 'set_rala_kernel'):  # RAVLT, the backbone or the whole model's
                m.set_attn_impl('reference' if spec['path'] == 'reference' else 'fast')
                m.set_rala_kernel(spec['path'] == 'fast')
    samples = getattr(model, 'data_samples', None)
    base = dict(_case_row(spec, device_name(device)), note='',
                params_M=sum(p.numel() for p in model.parameters()) / 1e6)
    mixed_precision = autocast(device, spec['dtype'])
    if spec.get('flops'):
        base.update(_flops(model, spec, device))

    def inference(run, batch):
        if samples is not None:
            model.data_samples = samples[:batch]
        x = torch.randn(batch, 3, h, w, device=device)

        def call():
            with torch.inference_mode(), mixed_precision:
                run(x)
        return call

    warmup, repeat = spec['warmup'], spec['repeat']
    if spec.get('compile'):
        # RAVLT's small helpers meet one shape per stage: past dynamo's default limit of 8
        # recompilations they would silently run eagerly
        torch._dynamo.config.recompile_limit = 64
        batch = batches[-1]
        calls = dict(eager=inference(model, batch),
                     compiled=inference(torch.compile(model, backend=spec['compile']), batch))
        start = time.perf_counter()
        calls['compiled']()  # compiles
        synchronize(device)
        compile_s = time.perf_counter() - start
        for _ in range(warmup):
            for call in calls.values():
                call()
        peak, mem_kind = peak_memory(calls['compiled'], device)
        ts = interleaved_seconds(calls, repeat, device)
        row = dict(base, task='inference', mode='compiled', batch=batch, peak_mem_MB=peak,
                   mem_kind=mem_kind, compile_s=compile_s, **latency_stats(ts['compiled'], batch))
        row['speedup_vs_eager'] = statistics.median(ts['eager']) / statistics.median(
            ts['compiled'])
        emit(row)
        return

    def eager(forward, task, batch, profile=False):
        def call():
            on_pass()
            forward()
        peak, mem_kind = peak_memory(call, device)  # the first pass: a warm-up too
        for _ in range(warmup - 1):
            call()
        ts = interleaved_seconds(dict(call=call), repeat, device)['call']
        shares = forward_shares(model, call, device) if profile else {}
        emit(dict(base, task=task, mode='eager', batch=batch, peak_mem_MB=peak,
                  mem_kind=mem_kind, **latency_stats(ts, batch), **shares))

    if train_batch:
        model.train()
        x = torch.randn(train_batch, 3, h, w, device=device)

        def step():
            with mixed_precision:
                loss = _readout(model(x))
            loss.backward()
            model.zero_grad(set_to_none=True)
        eager(step, 'train', train_batch)
        model.eval()
    for batch in batches:
        eager(inference(model, batch), 'inference', batch,
              profile=spec.get('profile') and batch == batches[0])


def forward_shares(model: nn.Module, call: Callable[[], object], device) -> Dict[str, float]:
    """Where one ``call`` of ``model`` spends its time, for a model that is or holds a RAVLT:
    the share of the stem and of each stage (``share_s3``) and of the softmax attention inside
    each stage (``share_s3_softmax``: its ``F.scaled_dot_product_attention`` calls, through
    which the fast path runs its softmax stages), of the whole ``call`` (for a whole model:
    detector or segmentor). {} without a RAVLT.

    One pass timed by hooks on the stem and the stages, which wait for the device before
    reading the clock (on CUDA the waits cost a little of the overlap, on CPU nothing).
    """
    ravlt_module = sys.modules.get('ravlt_dense.models.backbones.ravlt')
    if ravlt_module is None:  # never imported: the model holds no RAVLT
        return {}
    ravlt = next((m for m in model.modules() if isinstance(m, ravlt_module.RAVLT)), None)
    if ravlt is None:
        return {}
    parts = [('stem', ravlt.patch_embed)] + [(f's{i}', stage)
                                             for i, stage in enumerate(ravlt.layers, 1)]
    seconds, starts, stage_now = defaultdict(float), {}, ['']

    def clock():
        synchronize(device)
        return time.perf_counter()

    def enter(name):
        def hook(*_):
            stage_now[0] = name
            starts[name] = clock()
        return hook

    def leave(name):
        def hook(*_):
            seconds[name] += clock() - starts[name]
        return hook

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def timed_sdpa(*args, **kwargs):
        start = clock()
        out = sdpa(*args, **kwargs)
        seconds[stage_now[0] + '_softmax'] += clock() - start
        return out

    handles = [h for name, m in parts for h in (m.register_forward_pre_hook(enter(name)),
                                                m.register_forward_hook(leave(name)))]
    # RAVLT looks it up in torch.nn.functional at each call: this pass calls the timed one
    torch.nn.functional.scaled_dot_product_attention = timed_sdpa
    try:
        start = clock()
        call()
        total = clock() - start
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
        for h in handles:
            h.remove()
    return {f'share_{name}': value / total for name, value in seconds.items()}


def _flops(model: nn.Module, spec: dict, device) -> dict:
    """Both counts for one image in fp32 (FLOPs do not depend on the batch or the dtype)."""
    from ravlt_dense.tools.analysis import module_flops, traced_flops
    h, w = spec['shape']
    samples = getattr(model, 'data_samples', None)
    if samples is not None:
        model.data_samples = samples[:1]
    x = torch.randn(1, 3, h, w, device=device)
    out = {}
    try:
        full = traced_flops(model, (x, ))
        out.update(flops_full_G=full['total'] / 1e9, flops_attn_products_G=full['matmul'] / 1e9)
        big = {k: v for k, v in full['unsupported'].items()
               if not k.startswith(('aten::add', 'aten::mul', 'aten::sub', 'aten::div'))}
        out['uncounted_ops'] = ' '.join(sorted(k.replace('aten::', '') for k in big))
    except Exception as exc:  # tracing is fragile for whole detectors: report, keep the row
        out.update(flops_full_G=float('nan'), flops_attn_products_G=float('nan'),
                   uncounted_ops=f'trace failed: {type(exc).__name__}: {exc}'[:200])
    out['flops_modules_G'] = module_flops(model, (x, ))['total'] / 1e9
    if samples is not None:
        model.data_samples = samples
    return out


def _stream(proc: subprocess.Popen, lines: 'queue.Queue') -> None:
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def _error_line(stderr: str) -> str:
    """The line of a failed child's stderr that says what failed: the last exception line
    (torch's own hints such as "Set TORCHDYNAMO_VERBOSE=1 ..." come after it), else the last
    line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()] or ['no output']
    errors = [ln for ln in lines if re.match(r'[\w.]*(Error|Exception|Interrupt)\b', ln)]
    return (errors or lines)[-1]


def resident_gb(pid: int) -> float:
    """The most memory process ``pid`` has held resident (GB): its high-water mark or, where the
    process has just reset the mark (``peak_memory``), what it holds now."""
    try:
        with open(f'/proc/{pid}/status') as f:
            fields = dict(line.split(':', 1) for line in f if ':' in line)
        return max(int(fields.get(k, '0 kB').split()[0]) for k in ('VmHWM', 'VmRSS')) / 2**20
    except (OSError, ValueError):  # not Linux, or the process has just ended
        return 0.


def _budget_note(spec: dict, err: str) -> Optional[str]:
    """The note for a child that failed for want of memory, where a memory budget was set."""
    if spec.get('max_memory_gb') and re.search(r"OutOfMemoryError|out of memory|can't allocate",
                                               err):
        return f"stopped: over the {spec['max_memory_gb']:g} GB memory budget ({err})"
    return None


def _watch(proc: subprocess.Popen, lines: 'queue.Queue', spec: dict, timeout: float,
           stopped_why: str) -> Tuple[List[dict], Optional[str]]:
    """The rows a case's child prints until it ends, and why it must be stopped if a limit is
    reached first (the case's time, a pass's time budget, the memory budget; else None)."""
    rows, deadline = [], time.monotonic() + timeout
    pass_s, memory_gb = spec.get('max_pass_s'), spec.get('max_memory_gb')
    watch_memory = bool(memory_gb) and not spec['device'].startswith('cuda')
    pass_deadline = float('inf')
    while True:
        now = time.monotonic()
        if now >= deadline:
            return rows, stopped_why or f'timed out after {timeout:.0f} s'
        if now >= pass_deadline:
            return rows, f'over the {pass_s:g} s time budget (a forward pass ran longer)'
        if watch_memory:
            held = resident_gb(proc.pid)
            if held > memory_gb:
                return rows, f'over the {memory_gb:g} GB memory budget (resident {held:.1f} GB)'
        wait = min(deadline, pass_deadline) - now
        try:
            line = lines.get(timeout=min(wait, MEMORY_POLL_S) if watch_memory else wait)
        except queue.Empty:
            continue
        if line is None:
            return rows, None
        if line.startswith(RESULT_TAG):
            rows.append(json.loads(line[len(RESULT_TAG):]))
            pass_deadline = float('inf')  # its passes are over
        elif line.startswith(PASS_TAG) and pass_s:
            pass_deadline = time.monotonic() + pass_s


def run_isolated(spec: dict, timeout: float, stopped_why: str = '') -> List[dict]:
    """``measure(spec)`` in a fresh interpreter, given ``timeout`` seconds: the rows it measured,
    and a row with a note if it failed or ran out of time (``stopped_why`` then says why, e.g.
    the run's budget; default: the case's time limit). With ``spec['max_pass_s']`` a forward
    pass running longer stops the case, with ``spec['max_memory_gb']`` on CPU the child's
    resident memory going above it; their notes start 'stopped: over the'."""
    # The child imports the package this process did: `-m` puts its working directory first on
    # its path, the clone's root (REPO) that holds this package (a wheel's has none: installed).
    cmd = [sys.executable, '-m', __name__, json.dumps(spec)]
    fail = dict(_case_row(spec, spec['device']),
                mode='compiled' if spec.get('compile') else 'eager')
    if timeout <= 0:
        return [dict(fail, note=f'not run: {stopped_why or "no time left"}')]
    # stderr to a file: a full pipe would block the child and look like a hang
    with tempfile.TemporaryFile('w+') as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                cwd=REPO)
        lines: 'queue.Queue' = queue.Queue()
        threading.Thread(target=_stream, args=(proc, lines), daemon=True).start()
        try:
            rows, why = _watch(proc, lines, spec, timeout, stopped_why)
        finally:
            if proc.poll() is None:  # stopped by a limit, or the run interrupted (Ctrl-C)
                proc.kill()
            proc.wait()
        if why:
            return rows + [dict(fail, note=f'stopped: {why}' + (
                ' (the rows before were measured)' if rows else ''))]
        if proc.returncode != 0:
            log.seek(0)
            err = _error_line(log.read())
            note = _budget_note(spec, err) or f'failed (exit {proc.returncode}): {err}'
            rows.append(dict(fail, note=note[:300]))
    return rows


def main(argv=None) -> None:
    """The child: one spec in (JSON), one JSON line out per row, a line before each pass."""
    import warnings
    warnings.filterwarnings('ignore')
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    measure(spec, lambda row: print(RESULT_TAG + json.dumps(row), flush=True),
            lambda: print(PASS_TAG, flush=True))


if __name__ == '__main__':
    main()
