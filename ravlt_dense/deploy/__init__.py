"""Deploying whole RAVLT detectors and segmentors with mmdeploy (tools/deployment/deploy.py).

``import ravlt_dense.deploy.rewriters`` registers what mmdeploy 1.3.1 needs with current torch
(it needs mmdeploy: ``pip install --no-deps mmdeploy==1.3.1``, see docs/deployment.md);
:mod:`.pooling` needs torch alone, :mod:`.configs` (the deploy configs by task) mmengine;
:mod:`.evaluation` evaluates an exported file on a data set with PyTorch's post-processing
(tools/deployment/test_onnx.py).
"""
