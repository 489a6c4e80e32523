"""Measurements of RAVLT and the models built on it: FLOP counting (``flops``: traced and
modules-only, as the zoo's figures are counted by tools/analysis/get_flops.py), the rank
measures of the paper's attention analysis (``rank``) and the effective receptive field of any
backbone (``erf``, RepLKNet's method: tools/analysis/erf.py)."""
from .erf import effective_receptive_field
from .flops import PAPER_COUNTING, TensorForward, module_flops, traced_flops

__all__ = ['PAPER_COUNTING', 'TensorForward', 'effective_receptive_field', 'module_flops',
           'traced_flops']
