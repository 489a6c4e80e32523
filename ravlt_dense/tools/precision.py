"""Mixed precision where the machine has it: the zoo's configs train with mmengine's
``AmpOptimWrapper`` (fp16, as the paper), which refuses to build without an accelerator
("AmpOptimizerWrapper is only available training on gpu, npu, mlu or musa"). On such a machine
tools/train.py trains the same config in fp32 instead, and says so once.
"""
import warnings

from mmengine.config import Config
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available

# The arguments AmpOptimWrapper takes on top of OptimWrapper's (which rejects them).
AMP_ONLY_ARGS = ('loss_scale', 'dtype', 'use_fsdp')


def amp_device_available() -> bool:
    """Whether mmengine's AmpOptimWrapper can be built here (the devices it accepts)."""
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def _is_amp_wrapper(wrapper_type) -> bool:
    name = wrapper_type if isinstance(wrapper_type, str) else getattr(wrapper_type, '__name__', '')
    return name.split('.')[-1] == 'AmpOptimWrapper'  # 'mmengine.AmpOptimWrapper' too


def fit_optim_wrapper_to_device(cfg: Config) -> bool:
    """Turn the config's ``AmpOptimWrapper`` into a plain fp32 ``OptimWrapper`` where no
    accelerator is available, in place, with one warning naming what changed.

    With a GPU (or NPU/MLU/MUSA) the config is left as written. The optimizer, its parameter
    groups and gradient clipping stay as they are; only the AMP arguments (``loss_scale``,
    ``dtype``, ``use_fsdp``) go.

    Args:
        cfg (Config): The training config (its ``optim_wrapper`` is read and changed).

    Returns:
        bool: Whether the config was changed.
    """
    wrapper = cfg.get('optim_wrapper')
    if not wrapper or not _is_amp_wrapper(wrapper.get('type')) or amp_device_available():
        return False
    dropped = {k: wrapper.pop(k) for k in AMP_ONLY_ARGS if k in wrapper}
    wrapper['type'] = 'OptimWrapper'
    detail = ''.join(f', {k}={v!r}' for k, v in dropped.items())
    warnings.warn(
        'No GPU found: training in fp32 with optim_wrapper.type=OptimWrapper instead of the '
        f"config's AmpOptimWrapper (mixed precision{detail} dropped). On a GPU the config "
        'trains with AMP as written.')
    return True
