"""OpenVINO's runtime (PyPI ``openvino``, 2025 and later) as mmdeploy's ``openvino`` backend.

mmdeploy 1.3.1's OpenVINO backend converts ONNX to IR with Model Optimizer (removed from
OpenVINO in 2025.0) and runs it through the Inference Engine API (``IECore``, removed in
2024.0). Here the graph is the one exported for ONNX Runtime (standard ONNX ops with mmdet's own
post-processing, :mod:`.detection`), converted by ``openvino.convert_model`` to IR
(``end2end.xml`` / ``end2end.bin``) and run by ``openvino.Core``. Importing this module puts
:class:`OpenVINOManager` in mmdeploy's backend registry in place of mmdeploy's, so mmdeploy's
task processors, End2EndModel and test runner run OpenVINO models unchanged.

Graphs with mmdeploy's own ONNX ops (``mmdeploy::grid_sampler``, from
``libmmdeploy_onnxruntime_ops``, which DINO's and Mask2Former's deformable attention export
to) do not convert: :func:`refusal` names those models before any work.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmdeploy.backend.base import BACKEND_MANAGERS, BaseWrapper

# mmdeploy's own OpenVINO manager registers itself on import: import it first, so that ours,
# registered below under the same name, is the one mmdeploy finds
from mmdeploy.backend.openvino import OpenVINOManager as _MMDeployOpenVINOManager

PACKAGE = 'openvino'
INSTALL_HINT = 'pip install openvino==2026.4.1 (OpenVINO 2025 or later)'

# model (or decode head) types whose graphs hold mmdeploy's custom ops: what exports to them
UNSUPPORTED = {
    'DINO': 'its multi-scale deformable attention',
    'Mask2FormerHead': "its pixel decoder's multi-scale deformable attention",
}


def require_openvino() -> str:
    """Import OpenVINO or exit saying how to install it; returns its version."""
    try:
        import openvino
    except ImportError as err:
        raise SystemExit(f'the OpenVINO backend needs the package `openvino`, which is not '
                         f'installed ({err}): {INSTALL_HINT}')
    return openvino.__version__.split('-')[0]


def refusal(model_cfg) -> Optional[str]:
    """Why ``model_cfg``'s exported graph cannot run in OpenVINO, or None when it can."""
    model = model_cfg.model
    heads = model.get('decode_head') or {}
    for part in [model] + (list(heads) if isinstance(heads, (list, tuple)) else [heads]):
        what = UNSUPPORTED.get(part.get('type'))
        if what:
            return (f"{part['type']} does not run in OpenVINO: {what} exports to mmdeploy's "
                    'custom op mmdeploy::grid_sampler (from libmmdeploy_onnxruntime_ops), '
                    'which OpenVINO does not have. Deploy it with --backend onnxruntime, which '
                    'runs that op')
    return None


def custom_ops(onnx_file: str) -> List[str]:
    """The ops of ``onnx_file`` outside ONNX's standard domains (OpenVINO cannot read them)."""
    import onnx
    graph = onnx.load(onnx_file, load_external_data=False).graph
    return sorted({f'{node.domain}::{node.op_type}' for node in graph.node
                   if node.domain not in ('', 'ai.onnx')})


def onnx_to_openvino(onnx_file: str, xml_file: str) -> str:
    """Convert ``onnx_file`` to OpenVINO IR ``xml_file`` (and its ``.bin``), fp32 weights.

    Written under temporary names and renamed when whole (the ``.bin`` first: the ``.xml`` is
    what readers open), so an interrupted conversion leaves no file that looks like a model.
    """
    import openvino as ov
    stem = osp.splitext(xml_file)[0]
    tmp_stem = f'{stem}.part{os.getpid()}'
    try:
        try:
            model = ov.convert_model(onnx_file)
        except Exception:
            unknown = custom_ops(onnx_file)
            if unknown:
                raise ValueError(f'{onnx_file} holds ops OpenVINO does not have: '
                                 f'{", ".join(unknown)}') from None
            raise
        ov.save_model(model, tmp_stem + '.xml', compress_to_fp16=False)
        os.replace(tmp_stem + '.bin', stem + '.bin')
        os.replace(tmp_stem + '.xml', xml_file)
    finally:
        for ext in ('.xml', '.bin'):
            if osp.exists(tmp_stem + ext):
                os.remove(tmp_stem + ext)
    return xml_file


def remove_model(xml_file: str) -> None:
    """Delete an IR model: ``xml_file`` and its ``.bin``."""
    for path in (xml_file, osp.splitext(xml_file)[0] + '.bin'):
        if osp.exists(path):
            os.remove(path)


class OpenVINOWrapper(BaseWrapper):
    """An OpenVINO model (IR ``.xml`` or ``.onnx``) compiled for the CPU, called as mmdeploy's
    wrappers are: a dict of input tensors in, a dict of output tensors out.

    fp32 inference (``INFERENCE_PRECISION_HINT`` f32; OpenVINO would pick bf16 on CPUs that
    have it), on as many threads as PyTorch uses (``torch.get_num_threads()``: OMP_NUM_THREADS
    limits both). Dynamic heights and widths stay dynamic: one compiled model serves every size.

    Args:
        model_file (str): ``end2end.xml`` (its ``.bin`` beside it) or an ONNX file.
        output_names (Sequence[str], optional): Outputs in order; default the model's.
    """

    def __init__(self, model_file: str, output_names: Optional[Sequence[str]] = None):
        import openvino as ov
        core = ov.Core()
        self.model = core.read_model(model_file)
        self.compiled = core.compile_model(self.model, 'CPU', {
            'INFERENCE_PRECISION_HINT': 'f32',
            'INFERENCE_NUM_THREADS': torch.get_num_threads()})
        self.request = self.compiled.create_infer_request()
        if output_names is None:
            output_names = [output.get_any_name() for output in self.compiled.outputs]
        super().__init__(output_names)

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        feed = {name: np.ascontiguousarray(tensor.detach().cpu().numpy())
                for name, tensor in inputs.items()}
        results = self.request.infer(feed)
        outputs = {}
        for port, value in results.items():
            for name in port.get_names():
                outputs[name] = torch.from_numpy(np.array(value))
        return {name: outputs[name] for name in self.output_names}


class OpenVINOManager(_MMDeployOpenVINOManager):
    """mmdeploy's ``openvino`` backend through OpenVINO's current API."""

    @classmethod
    def build_wrapper(cls, backend_files: Sequence[str], device: str = 'cpu',
                      input_names: Optional[Sequence[str]] = None,
                      output_names: Optional[Sequence[str]] = None, deploy_cfg=None, **kwargs):
        if device != 'cpu':
            raise ValueError(f'the OpenVINO backend runs on the CPU here, not {device!r}')
        return OpenVINOWrapper(backend_files[0], output_names=output_names)

    @classmethod
    def get_version(cls) -> str:
        import openvino
        return openvino.__version__

    @classmethod
    def to_backend(cls, ir_files: Sequence[str], work_dir: str, deploy_cfg=None,
                   **kwargs) -> List[str]:
        """``end2end.xml`` of every ONNX file, in ``work_dir``."""
        return [onnx_to_openvino(onnx_file, osp.join(
            work_dir, osp.splitext(osp.basename(onnx_file))[0] + '.xml'))
            for onnx_file in ir_files]


def _register() -> None:
    """Ours in place of mmdeploy's manager (quietly: mmdeploy logs the replacement)."""
    from mmdeploy.utils import get_root_logger
    logger = get_root_logger()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        BACKEND_MANAGERS.register(PACKAGE)(OpenVINOManager)
    finally:
        logger.setLevel(level)


_register()
