"""Deploying whole RAVLT detectors and segmentors with mmdeploy (tools/deployment/deploy.py).

``import ravlt_dense.deploy.rewriters`` registers what mmdeploy 1.3.1 needs with current torch
(it needs mmdeploy: ``pip install --no-deps mmdeploy==1.3.1``, see docs/deployment.md);
:mod:`.pooling` needs torch alone, :mod:`.configs` (the deploy configs by task) mmengine;
:mod:`.evaluation` evaluates an exported file on a data set with PyTorch's post-processing
(tools/deployment/test_onnx.py); :mod:`.openvino_backend` runs the graphs in OpenVINO;
:mod:`.quantization` quantizes them to int8.
"""

# mmdeploy's backend name -> how the tools name it to users
BACKEND_NAMES = {'onnxruntime': 'onnxruntime', 'openvino': 'OpenVINO'}

INSTALL_HINT = ('pip install -e ".[deploy]" && pip install --no-deps mmdeploy==1.3.1 '
                '(or `make env`; see docs/deployment.md)')


def require_mmdeploy() -> None:
    """Import mmdeploy, onnxruntime and the project's rewriters, or exit saying what is
    missing and how to install it (the deploy tools' first step)."""
    try:
        import mmdeploy
    except ImportError as err:
        raise SystemExit(f'mmdeploy is not installed ({err}): {INSTALL_HINT}')
    try:
        import onnxruntime  # noqa: F401
        from mmdeploy.apis import build_task_processor  # noqa: F401

        import ravlt_dense.deploy.rewriters  # noqa: F401
    except ImportError as err:
        raise SystemExit(f'mmdeploy {mmdeploy.__version__} does not import with this stack: '
                         f'{err}. Tested: mmdeploy 1.3.1 with requirements/stack.txt; '
                         f'{INSTALL_HINT}')


def require_backend(backend: str) -> None:
    """Check that ``backend``'s runtime imports (and, for OpenVINO, put the project's OpenVINO
    backend in mmdeploy's registry), or exit naming the package to install. Call
    :func:`require_mmdeploy` first."""
    if backend not in BACKEND_NAMES:
        raise SystemExit(f'unknown backend {backend!r}: choose one of {", ".join(BACKEND_NAMES)}')
    if backend == 'openvino':
        from .openvino_backend import require_openvino
        require_openvino()
