"""Runner additions that configs name (registered in mmengine's registries on import)."""
from .hooks import PlainParamGroupsHook

__all__ = ['PlainParamGroupsHook']
