"""Runner additions (hooks, a file backend), registered in mmengine's registries on import."""
from .checkpoints import (
    AtomicLocalBackend,
    check_resume,
    checkpoint_damage,
    save_checkpoints_atomically,
)
from .hooks import PlainParamGroupsHook

__all__ = ['AtomicLocalBackend', 'PlainParamGroupsHook', 'check_resume', 'checkpoint_damage',
           'save_checkpoints_atomically']
