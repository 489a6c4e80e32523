"""Measurements of RAVLT and the models built on it: FLOP counting (``flops``: traced and
modules-only, as the zoo's figures are counted by tools/analysis/get_flops.py) and the rank
measures of the paper's attention analysis (``rank``)."""
from .flops import PAPER_COUNTING, TensorForward, module_flops, traced_flops

__all__ = ['PAPER_COUNTING', 'TensorForward', 'module_flops', 'traced_flops']
