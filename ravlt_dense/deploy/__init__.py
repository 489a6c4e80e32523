"""Deploying whole RAVLT detectors and segmentors with mmdeploy (tools/deployment/deploy.py).

``import ravlt_dense.deploy.rewriters`` registers what mmdeploy 1.3.1 needs with current torch
(it needs mmdeploy: ``pip install --no-deps mmdeploy==1.3.1``, see docs/deployment.md);
:mod:`.pooling` needs torch alone, :mod:`.configs` (the deploy configs by task) mmengine;
:mod:`.evaluation` evaluates an exported file on a data set with PyTorch's post-processing
(tools/deployment/test_onnx.py).
"""

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
