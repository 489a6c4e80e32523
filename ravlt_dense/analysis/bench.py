"""Pieces of ``tools/analysis/benchmark.py``: the model zoo, one measurement in a fresh child
process (parameters, two FLOP counts, latency, peak memory, throughput) and the reports.

Every (model, size) pair is measured in its own Python process, so peak memory is that
model's forward pass alone (allocator caches, earlier models and the parent do not leak in), and
a crash or a missing package costs one row, not the run.
"""
import importlib.util
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ravlt_dense.analysis.flops import TensorForward
from ravlt_dense.analysis.timing import autocast, cuda_peak_mb, device_name, synchronize

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULT_TAG = 'BENCH_RESULT_JSON:'
RALA_ONLY = ('rala', ) * 4


# --------------------------------------------------------------------------------------------
# Model zoo
# --------------------------------------------------------------------------------------------
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
    from mmpretrain.models import ConvNeXt
    return ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)


SWIN_T = dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
              num_heads=[3, 6, 12, 24], window_size=7, out_indices=(0, 1, 2, 3))
SWIN_S = dict(SWIN_T, depths=[2, 2, 18, 2])
SWIN_T_CHANNELS = [96, 192, 384, 768]

# name -> (description, builder, python packages it needs)
BACKBONES: Dict[str, Tuple[str, Callable[[], nn.Module], Tuple[str, ...]]] = {
    'ravlt_t': ('RAVLT-T (RALA x2, softmax x2)', _ravlt('t', False), ()),
    'ravlt_s': ('RAVLT-S (RALA x2, softmax x2)', _ravlt('s', False), ()),
    'ravlt_b': ('RAVLT-B (RALA x2, softmax x2)', _ravlt('b', False), ()),
    'ravlt_l': ('RAVLT-L (RALA x2, softmax x2)', _ravlt('l', False), ()),
    'ravlt_t_rala': ('RAVLT-T all-RALA', _ravlt('t', True), ()),
    'ravlt_s_rala': ('RAVLT-S all-RALA', _ravlt('s', True), ()),
    'ravlt_b_rala': ('RAVLT-B all-RALA', _ravlt('b', True), ()),
    'ravlt_l_rala': ('RAVLT-L all-RALA', _ravlt('l', True), ()),
    'swin_t': ('Swin-T (mmdet)', _mmdet(SWIN_T), ('mmdet', )),
    'swin_s': ('Swin-S (mmdet)', _mmdet(SWIN_S), ('mmdet', )),
    'r50': ('ResNet-50 (mmdet)', _mmdet(dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3))),
            ('mmdet', )),
    'pvtv2_b2': ('PVTv2-b2 (mmdet)', _mmdet(dict(type='PyramidVisionTransformerV2',
                                                 embed_dims=64, num_layers=[3, 4, 6, 3])),
                 ('mmdet', )),
    'convnext_t': ('ConvNeXt-T (mmpretrain)', _convnext_t, ('mmpretrain', )),
}
DEFAULT_BACKBONES = ('ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_t_rala', 'ravlt_s_rala',
                     'ravlt_b_rala', 'swin_t', 'swin_s', 'r50', 'pvtv2_b2', 'convnext_t')

# Whole models: name -> (description, config, replace the backbone by Swin-T?, default size).
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
        needs = BACKBONES[name][2]
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


def build_whole_model(name: str, batch: int, size: Tuple[int, int]) -> nn.Module:
    from mmengine.config import Config
    _, cfg_file, swin, _ = WHOLE_MODELS[name]
    cfg = Config.fromfile(osp.join(REPO_ROOT, cfg_file))
    model_cfg = cfg.model
    model_cfg.backbone.pop('init_cfg', None)  # random weights: timing needs no checkpoint
    model_cfg.pop('pretrained', None)
    if swin:
        _swap_to_swin(model_cfg)
    h, w = size
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    if 'maskrcnn' in name:
        import ravlt_dense  # noqa: F401  (registers RAVLT)
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=True)
        samples = [DetDataSample(metainfo=meta) for _ in range(batch)]
    else:
        import ravlt_dense  # noqa: F401
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample
        from mmseg.utils import register_all_modules
        import mmdet.models  # noqa: F401  (mmdet.SwinTransformer)
        register_all_modules(init_default_scope=True)
        samples = [SegDataSample(metainfo=meta) for _ in range(batch)]
    model = MODELS.build(model_cfg)
    return TensorForward(model, samples)


def build(name: str, level: str, batch: int = 1, size=(224, 224)) -> nn.Module:
    if level == 'backbone':
        model = BACKBONES[name][1]()
    else:
        model = build_whole_model(name, batch, size)
    # No init_weights(): timing and FLOPs do not depend on the values, and mmengine would log
    # every parameter of models without an init_cfg.
    model.eval()  # not chained: several mm backbones' train() return None
    return model


def description(name: str, level: str) -> str:
    table = BACKBONES if level == 'backbone' else WHOLE_MODELS
    return table[name][0] if name in table else name


# --------------------------------------------------------------------------------------------
# One measurement (runs in the child process)
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


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) so it measures from now on (Linux >= 4.0)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def measure(spec: dict) -> dict:
    """Measure one model at one size. ``spec`` holds name, level, size (h, w), batch, device,
    dtype, warmup, repeat, flops (bool) and optionally compile (a torch.compile backend).
    Returns the eager row and, with compile, the compiled model's row (timed in turn with the
    eager one, so that machine noise hits both alike)."""
    device = torch.device(spec['device'])
    h, w = spec['size']
    batch = spec['batch']
    torch.manual_seed(0)
    model = build(spec['name'], spec['level'], batch, (h, w)).to(device)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(batch, 3, h, w, device=device)
    dtype = spec['dtype']
    mixed_precision = autocast(device, dtype)

    def forward(run=model):
        with torch.inference_mode(), mixed_precision:
            run(x)
        synchronize(device)

    # Peak memory of the first forward pass over what the model and the input already hold.
    if device.type == 'cuda':
        peak = cuda_peak_mb(forward, device) * 2**20
        mem_kind = 'cuda max_memory_allocated delta'
    else:
        base = _proc_status('VmRSS')
        if base is not None and _reset_peak_rss():
            forward()
            peak = _proc_status('VmHWM') - base
            mem_kind = 'RSS peak delta (VmHWM)'
        else:  # ru_maxrss never goes down: a lower bound if the build peaked higher
            import resource
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            forward()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            mem_kind = 'ru_maxrss delta (lower bound)'

    runs = {'eager': model}
    compile_s = None
    if spec.get('compile'):  # compiled on its first call; timed in turn with the eager model
        runs['compiled'] = torch.compile(model, backend=spec['compile'])
        start = time.perf_counter()
        forward(runs['compiled'])
        compile_s = time.perf_counter() - start
    for _ in range(max(spec['warmup'] - 1, 0)):  # the first forward above was warm-up too
        for run in runs.values():
            forward(run)
    times = {name: [] for name in runs}
    for _ in range(spec['repeat']):
        for name, run in runs.items():
            start = time.perf_counter()
            forward(run)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, ts in times.items():
        ts.sort()
        q = statistics.quantiles(ts, n=4, method='inclusive') if len(ts) > 1 else ts * 3
        rows.append(dict(
            model=spec['name'], description=description(spec['name'], spec['level']),
            level=spec['level'], input=f'{h}x{w}', pixels=h * w, batch=batch,
            device=device_name(device), dtype=dtype, params_M=params / 1e6,
            latency_ms=statistics.median(ts) * 1e3, latency_q1_ms=q[0] * 1e3,
            latency_q3_ms=q[2] * 1e3, latency_min_ms=ts[0] * 1e3,
            latency_max_ms=ts[-1] * 1e3, images_per_s=batch / statistics.median(ts),
            peak_mem_MB=peak / 2**20, mem_kind=mem_kind, repeat=len(ts), note=''))
    if compile_s is not None:
        eager, compiled = rows
        # its own model name: tables, slopes and plots keep it apart from the eager model
        compiled.update(model=spec['name'] + '_compiled',
                        description=f"{eager['description']}, compiled ({spec['compile']})",
                        compile_s=compile_s, peak_mem_MB=float('nan'),
                        speedup_vs_eager=eager['latency_ms'] / compiled['latency_ms'])
    if spec.get('flops'):
        flops = _flops(model, spec, device)
        for row in rows:
            row.update(flops)
    return rows


def _flops(model: nn.Module, spec: dict, device) -> dict:
    """Both counts for one image in fp32 (FLOPs do not depend on the batch or the dtype)."""
    from .flops import module_flops, traced_flops
    h, w = spec['size']
    if spec['level'] == 'model':
        model.data_samples = model.data_samples[:1]
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
    return out


def child_main() -> None:
    """Entry point of the child process: one spec in (argv[1], JSON), one JSON row out."""
    import warnings
    warnings.filterwarnings('ignore')
    spec = json.loads(sys.argv[1])
    rows = measure(spec)
    print(RESULT_TAG + json.dumps(rows), flush=True)


def run_isolated(spec: dict, timeout: float) -> List[dict]:
    """``measure(spec)`` in a fresh interpreter (its rows: eager, and compiled with
    ``spec['compile']``); a failure comes back as one row with a note."""
    cmd = [sys.executable, '-c', 'from ravlt_dense.analysis.bench import child_main; child_main()',
           json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    h, w = spec['size']
    fail = dict(model=spec['name'], description=description(spec['name'], spec['level']),
                level=spec['level'], input=f'{h}x{w}', pixels=h * w, batch=spec['batch'],
                device=spec['device'], dtype=spec['dtype'])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return [dict(fail, note=f'timed out after {timeout:.0f} s')]
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    err = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    return [dict(fail, note=f'failed (exit {proc.returncode}): {err}'[:300])]


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
COLUMNS = ['model', 'description', 'level', 'input', 'pixels', 'batch', 'device', 'dtype',
           'params_M', 'flops_full_G', 'flops_modules_G', 'flops_attn_products_G',
           'latency_ms', 'latency_q1_ms', 'latency_q3_ms', 'latency_min_ms', 'latency_max_ms',
           'images_per_s', 'peak_mem_MB', 'mem_kind', 'repeat', 'compile_s',
           'speedup_vs_eager', 'uncounted_ops', 'note']


def write_csv(rows: List[dict], path: str) -> None:
    import csv
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, '') for k in COLUMNS})


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
                    row[key] = int(value) if key in ('pixels', 'batch', 'repeat') else float(value)
                except ValueError:
                    row[key] = value
            rows.append(row)
    return rows


def _fmt(value, digits=1) -> str:
    if value is None or value == '' or (isinstance(value, float) and math.isnan(value)):
        return '–'
    return f'{value:,.{digits}f}'


def scaling_slopes(rows: List[dict], key: str) -> Dict[str, float]:
    """log-log slope of ``key`` against pixels between each model's two largest sizes:
    1 = linear in pixels, 2 = quadratic."""
    slopes = {}
    for name in dict.fromkeys(r['model'] for r in rows):
        pts = sorted((r['pixels'], r[key]) for r in rows
                     if r['model'] == name and isinstance(r.get(key), (int, float))
                     and r[key] > 0)
        if len(pts) >= 2 and pts[-1][0] > pts[-2][0]:
            (p0, v0), (p1, v1) = pts[-2], pts[-1]
            slopes[name] = math.log(v1 / v0) / math.log(p1 / p0)
    return slopes


def markdown_table(rows: List[dict]) -> str:
    head = ('| model | input | batch | params (M) | FLOPs full (G) | FLOPs modules-only (G) | '
            'latency median (ms) | IQR (ms) | min–max (ms) | img/s | peak mem (MB) | device |')
    lines = [head, '|' + '---|' * head.count(' | ') + '---|']
    for r in rows:
        if 'latency_ms' not in r:
            lines.append(f"| {r['description']} | {r['input']} | {r['batch']} | "
                         + ' | '.join(['–'] * 8) + f" | {r['device']} ({r.get('note', '')}) |")
            continue
        lines.append(
            f"| {r['description']} | {r['input']} | {r['batch']} | {_fmt(r['params_M'], 2)} | "
            f"{_fmt(r.get('flops_full_G'), 2)} | {_fmt(r.get('flops_modules_G'), 2)} | "
            f"{_fmt(r['latency_ms'], 0)} | {_fmt(r['latency_q1_ms'], 0)}–"
            f"{_fmt(r['latency_q3_ms'], 0)} | {_fmt(r['latency_min_ms'], 0)}–"
            f"{_fmt(r['latency_max_ms'], 0)} | {_fmt(r['images_per_s'], 2)} | "
            f"{_fmt(r['peak_mem_MB'], 0)} | {r['device']} {r['dtype']} |")
    return '\n'.join(lines)


def plot_scaling(rows: List[dict], path: str) -> Optional[str]:
    """Log-log latency, memory and full FLOPs against pixel count, one line per model, with
    slope-1 and slope-2 guides. Returns None on success or why no plot was made."""
    if importlib.util.find_spec('matplotlib') is None:
        return 'matplotlib is not installed: no plot (add matplotlib to requirements/stack.txt)'
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [(key, label) for key, label in (('latency_ms', 'median latency (ms)'),
                                              ('peak_mem_MB', 'peak memory (MB)'),
                                              ('flops_full_G', 'FLOPs, full count (G)'))
              if scaling_slopes(rows, key)]  # only quantities some model has at two sizes
    if not panels:
        return 'no model was measured at two sizes: no scaling plot'
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        slopes = scaling_slopes(rows, key)
        names = list(dict.fromkeys(r['model'] for r in rows))
        colors = plt.get_cmap('tab20').colors
        for idx, name in enumerate(names):
            pts = sorted((r['pixels'], r[key]) for r in rows if r['model'] == name
                         and isinstance(r.get(key), (int, float)) and r[key] > 0)
            if not pts:
                continue
            desc = next(r['description'] for r in rows if r['model'] == name)
            style = '--' if name.endswith('_rala') else '-'
            slope = f' (slope {slopes[name]:.2f})' if name in slopes else ''
            ax.plot(*zip(*pts), style, marker='o', color=colors[idx % len(colors)],
                    label=desc + slope)
        all_pts = [r['pixels'] for r in rows if isinstance(r.get(key), (int, float))]
        if len(set(all_pts)) > 1:
            lo, hi = min(all_pts), max(all_pts)
            ref = min(r[key] for r in rows if isinstance(r.get(key), (int, float))
                      and r[key] > 0 and r['pixels'] == lo)
            for power, ls in ((1, ':'), (2, '-.')):
                ax.plot([lo, hi], [ref, ref * (hi / lo)**power], ls, color='grey',
                        label=f'slope {power} ({"linear" if power == 1 else "quadratic"})')
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('pixels per image (H x W)')
        ax.set_ylabel(label)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=7)
    dev = rows[0].get('device', '') if rows else ''
    fig.suptitle(f'Scaling with input size ({dev})', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
