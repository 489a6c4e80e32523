"""Measurements of RAVLT and the models built on it: FLOP counting (``flops``: traced and
modules-only, as the zoo's figures are counted by tools/analysis/get_flops.py), the rank
measures of the paper's attention analysis (``rank``), the effective receptive field of any
backbone (``erf``, RepLKNet's method: tools/analysis/erf.py) and class activation maps of
detectors and segmentors (``cam``: tools/analysis/cam.py)."""
from .cam import class_activation_maps
from .erf import effective_receptive_field
from .flops import PAPER_COUNTING, TensorForward, module_flops, traced_flops

__all__ = ['PAPER_COUNTING', 'TensorForward', 'class_activation_maps',
           'effective_receptive_field', 'module_flops', 'traced_flops']
