"""Data-pipeline additions for mmseg (importing registers them in mmseg's TRANSFORMS)."""
from .transforms import CheckSegLabels

__all__ = ['CheckSegLabels']
