"""Loading the authors' RAVLT checkpoints (and ours) with nothing skipped silently.

  download.py   http(s) URLs: downloaded once into the torch hub cache, checked whole
  safe_load.py  weights-only unpickling on either stack (no file's code ever runs)
  formats.py    the release's formats (classification, mmdet 2.x, mmseg 0.x) and ours
  loading.py    strict loading into a backbone or a whole model, zoo names resolved

Files may be given by path, by http(s) URL or (whole models) by a name of the model zoo.
"""
from .download import (
    CheckpointDownloadError,
    CorruptCheckpointError,
    check_complete,
    download_checkpoint,
    hub_cache_path,
    is_url,
)
from .formats import (
    convert_release_checkpoint,
    infer_arch,
    release_dataset_meta,
    strip_module_prefix,
    to_backbone_state_dict,
    unwrap_state_dict,
)
from .loading import (
    check_state_dict,
    find_checkpoint,
    fit_state_dict,
    format_report,
    load_backbone_checkpoint,
    load_model_checkpoint,
    resolve_checkpoint,
)
from .safe_load import (
    load_checkpoint_file,
    load_from_local_checked,
    register_checkpoint_loaders,
    register_safe_globals,
)

__all__ = [
    'CheckpointDownloadError', 'CorruptCheckpointError', 'check_complete', 'check_state_dict',
    'convert_release_checkpoint', 'download_checkpoint', 'find_checkpoint', 'fit_state_dict',
    'format_report', 'hub_cache_path', 'infer_arch', 'is_url', 'load_backbone_checkpoint',
    'load_checkpoint_file', 'load_from_local_checked', 'load_model_checkpoint',
    'register_checkpoint_loaders', 'register_safe_globals', 'release_dataset_meta',
    'resolve_checkpoint', 'strip_module_prefix', 'to_backbone_state_dict', 'unwrap_state_dict'
]
