"""What the tests share: the repository's paths, a tiny RAVLT, loading and running the tools
(as ``python tools/x.py`` would), the generated data sets, and a loopback HTTP server standing
in for the authors' weights host.

Test modules import the plain helpers (``from conftest import REPO, run_tool, ...``) and
request the fixtures by name.
"""
import functools
import http.server
import importlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Optional, Sequence
from unittest import mock

import pytest
import torch

# Without a GPU the fused kernels' tests run them in Triton's interpreter, which triton picks
# when @triton.jit runs: for its own library when triton.language is first imported (torch's
# dynamo imports it early), for ours when the kernel module is (the ``fused_kernels`` fixture).
# The variable is set for those imports only: tool subprocesses must not inherit it.
if not torch.cuda.is_available() and importlib.util.find_spec('triton') is not None:
    with mock.patch.dict(os.environ, TRITON_INTERPRET='1'):
        import triton.language  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

# The quick-start Mask R-CNN, and the side of the generated images it is tested on.
QUICKSTART = 'configs/quickstart/mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes.py'
IMG = 64

# Free GiB under the temporary folder below which a test run starts with a warning.
LOW_DISK_GIB = 2

# A RAVLT small enough for unit tests: every code path of the full variants, 8..64 channels.
TINY_ARCH = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                 mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.])


def pytest_sessionstart(session) -> None:
    """Warn of a nearly full disk where the tests write: it fails the end-to-end tests late, at
    a checkpoint save, with the reason deep in a tool's output."""
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    if free < LOW_DISK_GIB and reporter is not None:
        reporter.write_line(f'WARNING: {free:.1f} GiB free under {tmp}; the end-to-end tests need '
                            f'about {LOW_DISK_GIB} GiB for data and checkpoints: free some space '
                            'or point TMPDIR elsewhere', yellow=True, bold=True)


def load_script(path: str) -> ModuleType:
    """Import a script of tools/ or demo/ (``path`` relative to the repository) as a module.

    Its folder is on ``sys.path`` while it imports, as when it runs as ``python path`` (the
    data generators import their shared module that way).
    """
    path = REPO / path
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def python_with_stub(home, module, source=''):
    """A Python (``home``/python) where ``module`` (e.g. 'mmdet', 'mmcv.ops') is a stub
    package running ``source``, ahead of the real one on its path (``home``/stub)."""
    stubs = home / 'stub'
    package = stubs.joinpath(*module.split('.'))
    package.mkdir(parents=True)
    for parent in package.relative_to(stubs).parents:
        if parent.parts:
            (stubs / parent / '__init__.py').write_text('')
    (package / '__init__.py').write_text(source)
    python = home / 'python'
    python.write_text(f'#!/bin/sh\nPYTHONPATH={stubs}:$PYTHONPATH exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return python


def tool_env() -> dict:
    """The environment of the tools' subprocesses: one OpenMP thread (tiny models on shared
    cores, where more threads spin against other processes), no warnings, and this
    interpreter as ``python`` (tools/dist_train.sh calls it)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


def run_tool(args: Sequence, timeout: float = 300, check: bool = True,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` (or ``bash SCRIPT ...``) from the repository root, output captured.

    Args:
        args (Sequence): The script (``tools/train.py``...) and its arguments.
        timeout (float): Seconds before the run is killed and the test fails.
        check (bool): Fail the test on a non-zero exit, showing the end of the output.
        env (dict, optional): Variables set on top of :func:`tool_env`.
    """
    args = [str(a) for a in args]
    cmd = args if args[0] == 'bash' else [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(tool_env(), **(env or {})),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        # The error line first: CI listings of a long message may keep only its start.
        error = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), '')
        raise AssertionError(f'exit {proc.returncode}: {error}\n{" ".join(cmd)}\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


@pytest.fixture(scope='session', autouse=True)
def kernel_bugs_raise():
    """A fused kernel's bug fails the test instead of a warning and the PyTorch path
    (``ravlt_dense.ops.STRICT``; a GPU or triton the kernels do not support still falls back)."""
    from ravlt_dense import ops
    strict, ops.STRICT = ops.STRICT, True
    yield
    ops.STRICT = strict


@pytest.fixture(scope='module')
def fused_kernels():
    """The fused kernels (``ravlt_dense.ops.rala_kernels``) as this machine runs them: compiled
    on a GPU; without one in Triton's interpreter on CPU tensors, with TRITON_INTERPRET=1 set
    while the module's tests run (triton also reads it while it launches) and only then."""
    pytest.importorskip('triton')
    name = 'ravlt_dense.ops.rala_kernels'
    if torch.cuda.is_available():
        yield importlib.import_module(name)
        return
    module = sys.modules.get(name)
    if module is not None and not module.INTERPRETED:
        pytest.fail(f"{name} was imported without Triton's interpreter before the kernel "
                    f'tests: run them in a process of their own')
    with mock.patch.dict(os.environ, TRITON_INTERPRET='1'):
        yield importlib.import_module(name)


@pytest.fixture
def kernel_on_this_device(fused_kernels):
    """The backbone takes the kernels for CUDA tensors; on the CPU (interpreter) let it. On a
    GPU, fp32 means fp32 (cuDNN's convolutions would use TF32 in both paths otherwise)."""
    from ravlt_dense import ops
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    with mock.patch.object(ops, 'KERNEL_DEVICE_TYPES', ('cuda', device)), \
            mock.patch.dict(ops._failed, clear=True):
        yield
    torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture(params=['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device'))])
def device(request):
    """Each device a ``gpu``-marked test runs on: the CPU always, CUDA where there is one.

    On CUDA, fp32 means fp32 while the test runs (no TF32 in cuBLAS or cuDNN) and cuDNN picks
    deterministic algorithms, so that two computations of the same function are held to the
    CPU's tolerances.
    """
    if request.param == 'cpu':
        yield torch.device('cpu')
        return
    backends = torch.backends
    saved = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32,
             backends.cudnn.deterministic, backends.cudnn.benchmark)
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = False
    backends.cudnn.deterministic, backends.cudnn.benchmark = True, False
    try:
        yield torch.device('cuda')
    finally:
        (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32,
         backends.cudnn.deterministic, backends.cudnn.benchmark) = saved
        torch.cuda.empty_cache()


def needs_cuda(device):
    """Skip the calling test on a device other than CUDA (full-size models: minutes on a CPU)."""
    if device.type != 'cuda':
        pytest.skip('full-size check: meaningful on CUDA only')


@pytest.fixture
def fresh_dynamo():
    """A fixed seed and an empty dynamo cache: compiled code of an earlier model must not count
    against the recompile limits."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def weighted_sum(outputs) -> torch.Tensor:
    """A loss that gives every output element its own gradient (a fixed linear read-out), for
    comparing gradients of two computations of the same outputs."""
    return sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o)).sum()
               for o in outputs)


def metric_values(text: str, prefix: str = 'coco/') -> dict:
    """The metrics (``coco/bbox_mAP: 0.123`` ...) a tool printed, by name."""
    return {k: float(v) for k, v in re.findall(rf'({prefix}\w+): (-?[\d.]+)', text)}


def randomised(model):
    """A model whose every tensor differs from a fresh initialisation."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('running_var'):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point() and not name.endswith('RoPE.angle'):
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model.eval()


def release_imagenet_checkpoint(model):
    """The layout of the authors' classification files: {'model': ...} with the head."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('extra_norms.')}
    c = model.embed_dims[-1]
    state.update({'proj.weight': torch.randn(1024, c, 1, 1), 'proj.bias': torch.randn(1024),
                  'norm.weight': torch.ones(1024), 'norm.bias': torch.zeros(1024),
                  'norm.running_mean': torch.zeros(1024), 'norm.running_var': torch.ones(1024),
                  'norm.num_batches_tracked': torch.tensor(0),
                  'head.weight': torch.randn(1000, 1024), 'head.bias': torch.randn(1000)})
    return {'model': state}


def release_detection_checkpoint(model):
    """The layout of the authors' mmdet 2.x files: backbone. prefixes, heads, meta."""
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(256, model.embed_dims[0], 1, 1)
    return {'state_dict': state, 'meta': {'CLASSES': ('a', 'b'), 'epoch': 12}}


def pretrained(checkpoint, arch=TINY_ARCH, **kwargs):
    """A RAVLT whose init_cfg loads ``checkpoint`` (a path or URL) on ``init_weights()``."""
    from ravlt_dense.models.backbones.ravlt import RAVLT
    return RAVLT(arch, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)), **kwargs)


@pytest.fixture(scope='module')
def one_thread():
    """One torch thread for the module's in-process models (tiny models, shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def module_tmp(request, tmp_path_factory):
    """``mktemp`` for module-scoped fixtures. Their folders (trained work dirs of a few hundred
    MB) are removed once the module's tests have passed, as pytest.ini's
    ``tmp_path_retention_policy`` does for ``tmp_path``, which does not cover them."""
    made = []
    failed_before = request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope='session')
def coco_gen() -> ModuleType:
    """tools/data/make_coco_shapes.py as a module."""
    return load_script('tools/data/make_coco_shapes.py')


@pytest.fixture(scope='session')
def ade_gen() -> ModuleType:
    """tools/data/make_ade_shapes.py as a module."""
    return load_script('tools/data/make_ade_shapes.py')


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; a file named ``*.truncated.pth`` is announced at its full size
    (Content-Length) but only its first half is sent before the connection closes, as when a
    transfer is cut short."""

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.name.endswith('.truncated.pth') or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


class FileServer:
    """``http.server`` on 127.0.0.1 (ephemeral port) in a thread, serving ``root``."""

    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(_Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_port}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def file_server(tmp_path):
    """A running FileServer of ``tmp_path / 'www'``; ``.stop()`` takes it down mid-test."""
    root = tmp_path / 'www'
    root.mkdir()
    server = FileServer(root)
    yield server
    server.stop()


@pytest.fixture
def refused_url():
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/RAVLT_T.pth'


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache: downloads land in TORCH_HOME/hub/checkpoints."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home / 'hub' / 'checkpoints'


def shapes_options(root, batch_size=2):
    """--cfg-options that point the quick-start config at a generated set of IMG px images."""
    root = f'{root}/'
    opts = [
        f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={root}annotations/instances_val.json',
        f'test_evaluator.ann_file={root}annotations/instances_val.json',
        f'train_dataloader.dataset.pipeline.2.scale=({IMG},{IMG})',
        f'val_dataloader.dataset.pipeline.1.scale=({IMG},{IMG})',
        f'test_dataloader.dataset.pipeline.1.scale=({IMG},{IMG})',
        f'train_dataloader.batch_size={batch_size}', 'val_dataloader.batch_size=2',
        'test_dataloader.batch_size=2',
        # worker processes cost more than they save on 8 tiny images
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1', 'param_scheduler.0.end=4',
        # After a few iterations every score may still be below the default 0.05, and CocoMetric
        # then reports no metrics at all ("results ... empty"): keep every detection.
        'model.test_cfg.rcnn.score_thr=0.0', 'randomness.seed=0',
    ]
    return opts


@pytest.fixture(scope='module')
def shapes(module_tmp, coco_gen):
    """A generated COCO-format shapes set of 8 + 4 images of IMG px (for ``shapes_options``)."""
    root = module_tmp('coco_shapes')
    coco_gen.make_coco_shapes(str(root), num_train=8, num_val=4, size=IMG, seed=0,
                              max_objects=3)
    return root



# --------------------------------------------------------------------------------------------
# Trained quick-start models: one detector and one segmentor per test session, for the tools
# and demos that need a model which sees the shapes (CAMs, robustness, video, large images, web)
# --------------------------------------------------------------------------------------------
NO_WORKERS = [f'{loader}_dataloader.{key}'
              for loader in ('train', 'val', 'test')
              for key in ('num_workers=0', 'persistent_workers=False')]


def _train_quickstart(config, data_root, work_dir, options, checkpoint) -> SimpleNamespace:
    """Train a quick-start config on ``data_root`` with tools/train.py; the model's config is
    the one the run dumped (data roots resolved), so tools read it as they would a user's."""
    root = f'{data_root}/'
    roots = [f'{loader}_dataloader.dataset.data_root={root}' for loader in ('train', 'val', 'test')]
    run_tool(['tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *roots,
              *NO_WORKERS, *options], timeout=1200)
    return SimpleNamespace(config=work_dir / Path(config).name, checkpoint=work_dir / checkpoint,
                           data_root=Path(data_root), work_dir=work_dir)


@pytest.fixture(scope='session')
def quickstart_detector(tmp_path_factory, coco_gen) -> SimpleNamespace:
    """The quick-start Mask R-CNN (RAVLT-T from scratch) trained 6 epochs on the quick start's
    shapes set (96 + 24 images of 128 px): ``config``, ``checkpoint``, ``data_root`` (its
    ``val/`` images, ``annotations/instances_val.json``). Trained once per session, ~3 min."""
    root = tmp_path_factory.mktemp('quickstart_detector')
    coco_gen.make_coco_shapes(str(root / 'coco_shapes'), seed=0)
    ann = f'{root}/coco_shapes/annotations/instances_val.json'
    return _train_quickstart(
        QUICKSTART, root / 'coco_shapes', root / 'work', [
            'train_cfg.max_epochs=6', 'train_cfg.val_interval=6', 'param_scheduler.1.end=6',
            'default_hooks.checkpoint.interval=6', f'val_evaluator.ann_file={ann}',
            f'test_evaluator.ann_file={ann}'
        ], 'epoch_6.pth')


@pytest.fixture(scope='session')
def quickstart_segmentor(tmp_path_factory, ade_gen) -> SimpleNamespace:
    """The quick-start Semantic FPN (RAVLT-T from scratch) trained 120 iterations on the quick
    start's ADE-layout shapes set: ``config``, ``checkpoint``, ``data_root`` (its
    ``images/validation`` and ``annotations/validation``). Trained once per session, ~1 min."""
    root = tmp_path_factory.mktemp('quickstart_segmentor')
    ade_gen.make_ade_shapes(str(root / 'ade_shapes'), seed=0)
    return _train_quickstart(
        'configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py', root / 'ade_shapes',
        root / 'work', [
            'train_cfg.max_iters=120', 'train_cfg.val_interval=120',
            'param_scheduler.1.end=120', 'default_hooks.checkpoint.interval=120'
        ], 'iter_120.pth')
