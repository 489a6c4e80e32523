"""Pieces of ``tools/analysis/benchmark.py``: the one registry of backbones every table
compares, one case measured in a fresh child process, and the reports.

A case is one model (RAVLT: on one of its paths) at one input shape, eager or compiled.
Each case runs in its own Python process, so peak memory is that model's alone (allocator
caches, earlier models and the parent do not leak in), and a crash, a missing package or a
time-out costs that case, not the run. The child prints each measurement as soon as it has it:
a case stopped by its time limit or by the run's budget keeps what it measured.
"""
import importlib.util
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from ravlt_dense.analysis.flops import TensorForward
from ravlt_dense.analysis.timing import autocast, cuda_peak_mb, device_name, synchronize
from ravlt_dense.zoo import REPO_ROOT

RESULT_TAG = 'BENCH_RESULT_JSON:'
RALA_ONLY = ('rala', ) * 4


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
class Backbone(NamedTuple):
    description: str
    build: Callable[[], nn.Module]
    needs: Tuple[str, ...] = ()  # Python packages it imports
    ravlt: bool = False  # has RALA, so a fused-kernel setting


def _ravlt(arch: str, all_rala: bool) -> Callable[[], nn.Module]:
    def build():
        from ravlt_dense.models.backbones.ravlt import RAVLT
        kwargs = dict(attn_types=RALA_ONLY) if all_rala else {}
        return RAVLT(arch, **kwargs)
    return build


def _mmdet(cfg: dict) -> Callable[[], nn.Module]:
    def build():
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        return MODELS.build(dict(cfg))
    return build


def _convnext_t() -> nn.Module:
    # mmpretrain's, as mmdet's own ConvNeXt configs use it (type='mmpretrain.ConvNeXt')
    from mmpretrain.models import ConvNeXt
    return ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)


# The competitors are OpenMMLab's implementations, the ones a user of this backbone swaps in
# mmdet / mmseg configs (and the whole-model rows below swap in), and the only ones that import
# beside the CPU torch here (timm needs a torchvision built for it). On a bare GPU machine they
# need mmcv with its CUDA ops built (docs/gpu.md).
SWIN_T = dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
              num_heads=[3, 6, 12, 24], window_size=7, out_indices=(0, 1, 2, 3))
SWIN_S = dict(SWIN_T, depths=[2, 2, 18, 2])
SWIN_T_CHANNELS = [96, 192, 384, 768]
BASELINE = 'swin_t'  # the ratios of the summary table are against this one

BACKBONES: Dict[str, Backbone] = {
    'ravlt_t': Backbone('RAVLT-T (released mix)', _ravlt('t', False), ravlt=True),
    'ravlt_s': Backbone('RAVLT-S (released mix)', _ravlt('s', False), ravlt=True),
    'ravlt_b': Backbone('RAVLT-B (released mix)', _ravlt('b', False), ravlt=True),
    'ravlt_l': Backbone('RAVLT-L (released mix)', _ravlt('l', False), ravlt=True),
    'ravlt_t_rala': Backbone('RAVLT-T all-RALA', _ravlt('t', True), ravlt=True),
    'ravlt_s_rala': Backbone('RAVLT-S all-RALA', _ravlt('s', True), ravlt=True),
    'ravlt_b_rala': Backbone('RAVLT-B all-RALA', _ravlt('b', True), ravlt=True),
    'ravlt_l_rala': Backbone('RAVLT-L all-RALA', _ravlt('l', True), ravlt=True),
    'swin_t': Backbone('Swin-T (mmdet)', _mmdet(SWIN_T), ('mmdet', )),
    'swin_s': Backbone('Swin-S (mmdet)', _mmdet(SWIN_S), ('mmdet', )),
    'r50': Backbone('ResNet-50 (mmdet)', _mmdet(dict(type='ResNet', depth=50,
                                                     out_indices=(0, 1, 2, 3))), ('mmdet', )),
    'pvtv2_b2': Backbone('PVTv2-b2 (mmdet)', _mmdet(dict(type='PyramidVisionTransformerV2',
                                                         embed_dims=64, num_layers=[3, 4, 6, 3])),
                         ('mmdet', )),
    'convnext_t': Backbone('ConvNeXt-T (mmpretrain)', _convnext_t, ('mmpretrain', )),
}
DEFAULT_BACKBONES = ('ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_t_rala', 'ravlt_s_rala',
                     'ravlt_b_rala', 'swin_t', 'swin_s', 'r50', 'pvtv2_b2', 'convnext_t')

# Whole models: name -> (description, config, replace the backbone by Swin-T?, default shape).
# 1333 is padded to 1344 (a multiple of 32) as mmdet's data preprocessor does.
WHOLE_MODELS = {
    'maskrcnn_ravlt_s': ('Mask R-CNN RAVLT-S', 'configs/maskrcnn_ravlt_s_coco.py', False,
                         (800, 1344)),
    'maskrcnn_swin_t': ('Mask R-CNN Swin-T', 'configs/maskrcnn_ravlt_s_coco.py', True,
                        (800, 1344)),
    'maskrcnn_ravlt_t': ('Mask R-CNN RAVLT-T', 'configs/maskrcnn_ravlt_t_coco.py', False,
                         (800, 1344)),
    'upernet_ravlt_s': ('UperNet RAVLT-S', 'configs/upernet_ravlt_s_ade20k.py', False,
                        (512, 512)),
    'upernet_swin_t': ('UperNet Swin-T', 'configs/upernet_ravlt_s_ade20k.py', True, (512, 512)),
}
DEFAULT_WHOLE_MODELS = ('maskrcnn_ravlt_s', 'maskrcnn_swin_t', 'upernet_ravlt_s',
                        'upernet_swin_t')


def missing_requirement(name: str, level: str) -> Optional[str]:
    """Why ``name`` cannot be measured here (a note for the report), or None."""
    if level == 'backbone':
        if name not in BACKBONES:
            return f'unknown backbone (choose from {sorted(BACKBONES)})'
        needs = BACKBONES[name].needs
    else:
        if name not in WHOLE_MODELS:
            return f'unknown model (choose from {sorted(WHOLE_MODELS)})'
        needs = ('mmdet', ) if 'maskrcnn' in name else ('mmseg', 'mmdet')
    for pkg in needs:
        if importlib.util.find_spec(pkg) is None:
            return f'{pkg} is not installed'
    if needs and importlib.util.find_spec('mmcv') is None:
        return 'mmcv is not installed'
    return None


# RAVLT's paths: the fast one (RALA's fused kernels where they apply: CUDA), the fast one with
# the kernels switched off (RAVLT(rala_kernel=False)), and the formulas written out.
PATHS = ('fast', 'fast-nokernel', 'reference')


def has_rala(name: str, level: str) -> bool:
    """Whether the model is or holds RAVLT, i.e. has PATHS to measure."""
    if level == 'backbone':
        return name in BACKBONES and BACKBONES[name].ravlt
    return name in WHOLE_MODELS and not WHOLE_MODELS[name][2]


def _swap_to_swin(model_cfg) -> None:
    """Swin-T in place of the backbone; the first consumer's in_channels follow (neck or head)."""
    model_cfg.backbone = dict(SWIN_T, type='mmdet.SwinTransformer')
    neck = model_cfg.get('neck')
    if neck is not None and 'in_channels' in neck:
        neck.in_channels = list(SWIN_T_CHANNELS)
        return
    for key in ('decode_head', 'auxiliary_head'):
        head = model_cfg.get(key)
        if head is None:
            continue
        if isinstance(head.in_channels, (list, tuple)):
            head.in_channels = [SWIN_T_CHANNELS[i] for i in head.in_index]
        else:
            head.in_channels = SWIN_T_CHANNELS[head.in_index]


def build_whole_model(name: str, batch: int, shape: Tuple[int, int]) -> TensorForward:
    import os.path as osp
    from mmengine.config import Config
    _, cfg_file, swin, _ = WHOLE_MODELS[name]
    cfg = Config.fromfile(osp.join(REPO_ROOT, cfg_file))
    model_cfg = cfg.model
    model_cfg.backbone.pop('init_cfg', None)  # random weights: timing needs no checkpoint
    model_cfg.pop('pretrained', None)
    if swin:
        _swap_to_swin(model_cfg)
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    import ravlt_dense  # noqa: F401  (registers RAVLT)
    if 'maskrcnn' in name:
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample as Sample
        from mmdet.utils import register_all_modules
    else:
        import mmdet.models  # noqa: F401  (mmdet.SwinTransformer)
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample as Sample
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return TensorForward(MODELS.build(model_cfg), [Sample(metainfo=meta) for _ in range(batch)])


def build(name: str, level: str, batch: int = 1, shape=(224, 224)) -> nn.Module:
    if level == 'backbone':
        model = BACKBONES[name].build()
    else:
        model = build_whole_model(name, batch, shape)
    # No init_weights(): timing and FLOPs do not depend on the values, and mmengine would log
    # every parameter of models without an init_cfg.
    model.eval()  # not chained: several mm backbones' train() return None
    return model


def description(name: str, level: str) -> str:
    if level == 'backbone':
        return BACKBONES[name].description if name in BACKBONES else name
    return WHOLE_MODELS[name][0] if name in WHOLE_MODELS else name


# --------------------------------------------------------------------------------------------
# One case (runs in the child process)
# --------------------------------------------------------------------------------------------
def _proc_status(field: str) -> Optional[int]:
    """VmRSS / VmHWM of this process in bytes (Linux)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(fn: Callable[[], object], device: torch.device) -> Tuple[float, str]:
    """(MB, how measured) that one call of ``fn`` held at its peak over what was held before."""
    if device.type == 'cuda':
        return cuda_peak_mb(fn, device), 'cuda max_memory_allocated delta'
    base = _proc_status('VmRSS')
    try:  # reset the kernel's RSS high-water mark (VmHWM) to now (Linux >= 4.0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        base = None
    if base is not None:
        fn()
        return (_proc_status('VmHWM') - base) / 2**20, 'RSS peak delta (VmHWM)'
    import resource  # ru_maxrss never goes down: a lower bound if the build peaked higher
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (after - before) / 2**20, 'ru_maxrss delta (lower bound)'


def interleaved_seconds(calls: Dict[str, Callable[[], object]], repeat: int,
                        device: torch.device) -> Dict[str, List[float]]:
    """Sorted wall times of ``repeat`` calls of each, in turn (noise hits all alike), each timed
    until the device has finished it."""
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(ts) for name, ts in times.items()}


def _latency(ts: List[float], batch: int) -> dict:
    q = statistics.quantiles(ts, n=4, method='inclusive') if len(ts) > 1 else ts * 3
    median = statistics.median(ts)
    return dict(latency_ms=median * 1e3, latency_q1_ms=q[0] * 1e3, latency_q3_ms=q[2] * 1e3,
                latency_min_ms=ts[0] * 1e3, latency_max_ms=ts[-1] * 1e3,
                images_per_s=batch / median, repeat=len(ts))


def _readout(outputs) -> torch.Tensor:
    """A scalar that reaches every output (the backward's cost does not depend on the loss)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float().sum()
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return sum(_readout(o) for o in outputs if isinstance(o, (torch.Tensor, list, tuple, dict)))


def measure(spec: dict, emit: Callable[[dict], None]) -> None:
    """Measure one case, ``emit``-ting each row as soon as it is measured.

    ``spec``: name, level, shape (h, w), device, dtype, batches (inference batch sizes),
    train_batch (0: none), warmup, repeat, flops (bool), path (one of PATHS; None for models
    without RAVLT), compile (a torch.compile backend, or None for the eager case).
    Eager: a training step (forward + backward) at ``train_batch`` first (a model that ran under
    inference_mode first would hold inference tensors), then inference at each batch. Compiled:
    inference at the largest batch, timed in turn with the eager model.
    """
    device = torch.device(spec['device'])
    level, (h, w) = spec['level'], spec['shape']
    batches, train_batch = sorted(spec['batches']), spec.get('train_batch', 0)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # the fastest convolution algorithms
    torch.manual_seed(0)
    model = build(spec['name'], level, max(batches + [train_batch]), (h, w)).to(device)
    if spec.get('path'):
        for m in model.modules():
            if hasattr(m, 'set_rala_kernel'):  # RAVLT, the backbone or the whole model's
                m.set_attn_impl('reference' if spec['path'] == 'reference' else 'fast')
                m.set_rala_kernel(spec['path'] == 'fast')
    samples = getattr(model, 'data_samples', None)
    base = dict(model=spec['name'], description=description(spec['name'], level), level=level,
                input=f'{h}x{w}', pixels=h * w, device=device_name(device),
                dtype=spec['dtype'], path=spec.get('path') or '',
                params_M=sum(p.numel() for p in model.parameters()) / 1e6, note='')
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
                   mem_kind=mem_kind, compile_s=compile_s, **_latency(ts['compiled'], batch))
        row['speedup_vs_eager'] = statistics.median(ts['eager']) / statistics.median(
            ts['compiled'])
        emit(row)
        return

    if train_batch:
        model.train()
        x = torch.randn(train_batch, 3, h, w, device=device)

        def step():
            with mixed_precision:
                loss = _readout(model(x))
            loss.backward()
            model.zero_grad(set_to_none=True)
        peak, mem_kind = peak_memory(step, device)  # also the first warm-up step
        for _ in range(warmup - 1):
            step()
        ts = interleaved_seconds(dict(step=step), repeat, device)['step']
        emit(dict(base, task='train', mode='eager', batch=train_batch, peak_mem_MB=peak,
                  mem_kind=mem_kind, **_latency(ts, train_batch)))
        model.eval()
    for batch in batches:
        call = inference(model, batch)
        peak, mem_kind = peak_memory(call, device)  # the first pass: a warm-up too
        for _ in range(warmup - 1):
            call()
        ts = interleaved_seconds(dict(call=call), repeat, device)['call']
        emit(dict(base, task='inference', mode='eager', batch=batch, peak_mem_MB=peak,
                  mem_kind=mem_kind, **_latency(ts, batch)))


def _flops(model: nn.Module, spec: dict, device) -> dict:
    """Both counts for one image in fp32 (FLOPs do not depend on the batch or the dtype)."""
    from .flops import module_flops, traced_flops
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


def child_main() -> None:
    """Entry point of the child process: one spec in (argv[1], JSON), one JSON line per row."""
    import warnings
    warnings.filterwarnings('ignore')
    measure(json.loads(sys.argv[1]),
            lambda row: print(RESULT_TAG + json.dumps(row), flush=True))


def _stream(proc: subprocess.Popen, lines: 'queue.Queue') -> None:
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def run_isolated(spec: dict, timeout: float, stopped_why: str = '') -> List[dict]:
    """``measure(spec)`` in a fresh interpreter, given ``timeout`` seconds: the rows it measured,
    and a row with a note if it failed or ran out of time (``stopped_why`` then says why, e.g.
    the run's budget; default: the case's time limit)."""
    cmd = [sys.executable, '-c', 'from ravlt_dense.analysis.bench import child_main; child_main()',
           json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    h, w = spec['shape']
    fail = dict(model=spec['name'], description=description(spec['name'], spec['level']),
                level=spec['level'], input=f'{h}x{w}', pixels=h * w, device=spec['device'],
                dtype=spec['dtype'], path=spec.get('path') or '',
                mode='compiled' if spec.get('compile') else 'eager')
    if timeout <= 0:
        return [dict(fail, note=f'not run: {stopped_why or "no time left"}')]
    # stderr to a file: a full pipe would block the child and look like a hang
    with tempfile.TemporaryFile('w+') as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                cwd=REPO_ROOT)
        lines: 'queue.Queue' = queue.Queue()
        threading.Thread(target=_stream, args=(proc, lines), daemon=True).start()
        rows, deadline = [], time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                proc.kill()
                proc.wait()
                why = stopped_why or f'timed out after {timeout:.0f} s'
                return rows + [dict(fail, note=f'stopped: {why}' + (
                    ' (the rows before were measured)' if rows else ''))]
            if line is None:
                break
            if line.startswith(RESULT_TAG):
                rows.append(json.loads(line[len(RESULT_TAG):]))
        proc.wait()
        if proc.returncode != 0:
            log.seek(0)
            err = ([ln for ln in log.read().splitlines() if ln.strip()] or ['no output'])[-1]
            rows.append(dict(fail, note=f'failed (exit {proc.returncode}): {err}'[:300]))
    return rows


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
COLUMNS = ['model', 'description', 'level', 'path', 'task', 'mode', 'input', 'pixels',
           'batch', 'device', 'dtype', 'params_M', 'flops_full_G', 'flops_modules_G',
           'flops_attn_products_G', 'latency_ms', 'latency_q1_ms', 'latency_q3_ms',
           'latency_min_ms', 'latency_max_ms', 'images_per_s', 'peak_mem_MB', 'mem_kind',
           'repeat', 'compile_s', 'speedup_vs_eager', 'uncounted_ops', 'note']
INTS = ('pixels', 'batch', 'repeat')


def write_csv(rows: List[dict], path: str, columns: List[str] = COLUMNS) -> None:
    import csv
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, '') for k in columns})


def read_csv(path: str) -> List[dict]:
    """Rows written by ``write_csv``, numbers parsed back (empty cells dropped)."""
    import csv
    rows = []
    with open(path, newline='') as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if value == '':
                    continue
                try:
                    row[key] = int(value) if key in INTS else float(value)
                except ValueError:
                    row[key] = value
            rows.append(row)
    return rows


def _fmt(value, digits=1) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return '–'
    return f'{value:,.{digits}f}'


def label(row: dict) -> str:
    """The model as the tables name it: its description and, for RAVLT, a path other than fast."""
    path = {'fast-nokernel': ', no RALA kernel', 'reference': ', reference path'}
    return row['description'] + path.get(row.get('path'), '')


def series(row: dict) -> str:
    """Rows that differ only in their input shape: one line of the scaling plot."""
    return (f"{label(row)}, {row.get('task', 'inference')} {row.get('mode', 'eager')} "
            f"b{row.get('batch', 1)}")


def scaling_slopes(rows: List[dict], key: str) -> Dict[str, float]:
    """log-log slope of ``key`` against pixels between each series' two largest shapes:
    1 = linear in pixels, 2 = quadratic."""
    slopes = {}
    for name in dict.fromkeys(map(series, rows)):
        pts = sorted((r['pixels'], r[key]) for r in rows
                     if series(r) == name and isinstance(r.get(key), (int, float))
                     and r[key] > 0)
        if len(pts) >= 2 and pts[-1][0] > pts[-2][0]:
            (p0, v0), (p1, v1) = pts[-2], pts[-1]
            slopes[name] = math.log(v1 / v0) / math.log(p1 / p0)
    return slopes


def markdown_table(rows: List[dict]) -> str:
    """Every row measured (or the note saying why not)."""
    head = ('| model | task | mode | input | batch | params (M) | FLOPs full (G) | '
            'FLOPs modules-only (G) | latency median (ms) | IQR (ms) | min–max (ms) | img/s | '
            'peak mem (MB) | device |')
    lines = [head, '|' + '---|' * head.count(' | ') + '---|']
    for r in rows:
        start = (f"| {label(r)} | {r.get('task', '–')} | {r.get('mode', '–')} | {r['input']} | "
                 f"{r.get('batch', '–')} |")
        if 'latency_ms' not in r:
            lines.append(start + ' – |' * 8 + f" {r['device']} ({r.get('note', '')}) |")
            continue
        lines.append(
            f"{start} {_fmt(r.get('params_M'), 2)} | "
            f"{_fmt(r.get('flops_full_G'), 2)} | {_fmt(r.get('flops_modules_G'), 2)} | "
            f"{_fmt(r['latency_ms'], 1)} | {_fmt(r['latency_q1_ms'], 1)}–"
            f"{_fmt(r['latency_q3_ms'], 1)} | {_fmt(r['latency_min_ms'], 1)}–"
            f"{_fmt(r['latency_max_ms'], 1)} | {_fmt(r['images_per_s'], 2)} | "
            f"{_fmt(r['peak_mem_MB'], 0)} | {r['device']} {r['dtype']} |")
    return '\n'.join(lines)


# The summary's metrics: (key, header, pick the row, value of the row, higher is better)
def _metrics(rows: List[dict]):
    infer = [r for r in rows if r.get('task') == 'inference' and 'latency_ms' in r]
    big = max((r['batch'] for r in infer), default=1)
    small = min((r['batch'] for r in infer), default=1)
    train = [r['batch'] for r in rows if r.get('task') == 'train' and 'latency_ms' in r]
    tb = train[0] if train else 2
    return [
        ('inference', f'inference b{big} (img/s)',
         lambda r: r.get('task') == 'inference' and r.get('mode') == 'eager'
         and r.get('batch') == big, 'images_per_s', True),
        ('latency', f'latency b{small} (ms)',
         lambda r: r.get('task') == 'inference' and r.get('mode') == 'eager'
         and r.get('batch') == small, 'latency_ms', False),
        ('train', f'train step b{tb} (ms)', lambda r: r.get('task') == 'train', 'latency_ms',
         False),
        ('compiled', f'compiled b{big} (img/s)',
         lambda r: r.get('mode') == 'compiled', 'images_per_s', True),
        ('train_peak', f'train peak b{tb} (MB)', lambda r: r.get('task') == 'train',
         'peak_mem_MB', False),
    ]


# Issue 17's targets for RAVLT-S (released mix, fast path) against Swin-T in the same run:
# ratio >= target for speed (Swin-T's time / ours, our img/s / Swin-T's), <= for memory.
TARGETS = {'inference': 1.0, 'latency': 0.6, 'train': 0.8, 'compiled': 0.6, 'train_peak': 1.5}
TARGET_MODEL = ('ravlt_s', 'fast')


def summary_rows(rows: List[dict], baseline: str = BASELINE) -> List[dict]:
    """One row per (model, path, input): the metrics of issue 17 item 4 and each one's
    ratio to the baseline's in the same run (>1 = better for speed; memory: ours / theirs)."""
    metrics = _metrics(rows)
    out = []
    keys = dict.fromkeys((r['model'], r.get('path', ''), r['input']) for r in rows)
    for model, path, shape in keys:
        mine = [r for r in rows if (r['model'], r.get('path', ''), r['input'])
                == (model, path, shape) and 'latency_ms' in r]
        theirs = [r for r in rows if r['model'] == baseline and r['input'] == shape
                  and 'latency_ms' in r]
        first = next((r for r in rows if (r['model'], r.get('path', ''), r['input'])
                      == (model, path, shape)), {})
        row = dict(model=model, label=label(first), path=path, input=shape,
                   device=first.get('device', ''), dtype=first.get('dtype', ''))
        for key, _, pick, value, higher in metrics:
            own = next((r[value] for r in mine if pick(r)), None)
            ref = next((r[value] for r in theirs if pick(r)), None)
            row[key] = own
            if own and ref:
                row[key + '_ratio'] = own / ref if (higher or key == 'train_peak') else ref / own
        out.append(row)
    return out


def summary_columns(rows: List[dict]) -> List[str]:
    cols = ['model', 'label', 'path', 'input', 'device', 'dtype']
    for key, *_ in _metrics(rows):
        cols += [key, key + '_ratio']
    return cols


def summary_table(rows: List[dict], baseline: str = BASELINE) -> str:
    """The summary as Markdown: value (ratio to the baseline) per metric measured."""
    summary = summary_rows(rows, baseline)
    metrics = [m for m in _metrics(rows) if any(s.get(m[0]) is not None for s in summary)]
    head = '| model | input | ' + ' | '.join(m[1] for m in metrics) + ' |'
    lines = [head, '|' + '---|' * (len(metrics) + 2)]
    for s in summary:
        cells = []
        for key, *_ in metrics:
            value, ratio = s.get(key), s.get(key + '_ratio')
            digits = 0 if key == 'train_peak' else 1
            cells.append(_fmt(value, digits) + (f' ({ratio:.2f}x)' if ratio else ''))
        lines.append(f"| {s['label']} | {s['input']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def target_lines(rows: List[dict], baseline: str = BASELINE) -> List[str]:
    """Issue 17's targets for the target model against the baseline: met, or missed by how much."""
    lines = []
    for s in summary_rows(rows, baseline):
        if (s['model'], s['path']) != TARGET_MODEL:
            continue
        parts = []
        for key, target in TARGETS.items():
            ratio = s.get(key + '_ratio')
            if ratio is None:
                continue
            met = ratio <= target if key == 'train_peak' else ratio >= target
            sign = '<=' if key == 'train_peak' else '>='
            gap = '' if met else f', missed by {abs(ratio / target - 1) * 100:.0f}%'
            parts.append(f"{key} {ratio:.2f}x (target {sign} {target}{gap or ': met'})")
        if parts:
            lines.append(f"- {s['label']} vs {description(baseline, 'backbone')} at "
                         f"{s['input']}: " + '; '.join(parts))
    return lines


def plot_scaling(rows: List[dict], path: str) -> Optional[str]:
    """Log-log latency, memory and full FLOPs against pixel count, one line per series, with
    slope-1 and slope-2 guides. Returns None on success or why no plot was made."""
    if importlib.util.find_spec('matplotlib') is None:
        return 'matplotlib is not installed: no plot (add matplotlib to requirements/stack.txt)'
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [(key, name) for key, name in (('latency_ms', 'median latency (ms)'),
                                            ('peak_mem_MB', 'peak memory (MB)'),
                                            ('flops_full_G', 'FLOPs, full count (G)'))
              if scaling_slopes(rows, key)]  # only quantities some series has at two shapes
    if not panels:
        return 'no model was measured at two shapes: no scaling plot'
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
    colors = plt.get_cmap('tab20').colors
    for ax, (key, name) in zip(axes[0], panels):
        slopes = scaling_slopes(rows, key)
        for idx, line in enumerate(dict.fromkeys(map(series, rows))):
            pts = sorted((r['pixels'], r[key]) for r in rows if series(r) == line
                         and isinstance(r.get(key), (int, float)) and r[key] > 0)
            if not pts:
                continue
            style = '--' if 'all-RALA' in line else '-'
            slope = f' (slope {slopes[line]:.2f})' if line in slopes else ''
            ax.plot(*zip(*pts), style, marker='o', color=colors[idx % len(colors)],
                    label=line + slope)
        values = [(r['pixels'], r[key]) for r in rows
                  if isinstance(r.get(key), (int, float)) and r[key] > 0]
        if len({p for p, _ in values}) > 1:
            lo, hi = min(p for p, _ in values), max(p for p, _ in values)
            ref = min(v for p, v in values if p == lo)
            for power, ls in ((1, ':'), (2, '-.')):
                ax.plot([lo, hi], [ref, ref * (hi / lo)**power], ls, color='grey',
                        label=f'slope {power} ({"linear" if power == 1 else "quadratic"})')
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('pixels per image (H x W)')
        ax.set_ylabel(name)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Scaling with input size ({rows[0].get('device', '')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
