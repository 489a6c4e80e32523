"""Adaptive average pooling written so that an exported graph computes what PyTorch computes.

PyTorch's ``adaptive_avg_pool2d`` averages, for output cell ``i`` of ``out``, the input rows
``floor(i * size / out)`` to ``ceil((i + 1) * size / out)`` (exclusive): bins of unequal length
that may overlap when ``size`` is not a multiple of ``out``. mmdeploy exports it as
``avg_pool2d`` with kernel and stride ``size // out``, which is the same only when ``size``
divides by ``out`` (UperNet's pyramid pooling at scales 1, 2, 3, 6: inputs that are multiples of
192). Here each axis is pooled by a matrix of PyTorch's bins (``1 / len(bin)`` inside a bin, 0
elsewhere), built from the input's size with tensor operations: under tracing the size is a
graph value, so one graph is exact at every size, static or dynamic.
"""
from typing import Optional, Sequence, Union

import torch
from torch.nn.modules.utils import _pair


def adaptive_pool_matrix(size: Union[int, torch.Tensor], out: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(out, size)`` matrix whose row ``i`` averages PyTorch's adaptive bin ``i``.

    Args:
        size (int | Tensor): Length of the pooled axis (a traced 0-dim tensor under export).
        out (int): Number of output cells.
        dtype (torch.dtype): dtype of the matrix.
    """
    if not isinstance(size, torch.Tensor):  # under tracing it is one already (a graph value)
        size = torch.tensor(size, dtype=torch.long)
    cells = torch.arange(out, dtype=torch.long)
    start = torch.div(cells * size, out, rounding_mode='floor')
    end = torch.div((cells + 1) * size + out - 1, out, rounding_mode='floor')
    positions = torch.arange(size, dtype=torch.long)
    inside = (positions[None] >= start[:, None]) & (positions[None] < end[:, None])
    weights = inside.to(dtype)
    return weights / weights.sum(1, keepdim=True)


def exact_adaptive_avg_pool2d(input: torch.Tensor,
                              output_size: Union[int, Sequence[Optional[int]]]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(input, output_size)`` as two matrix products (rows, columns).

    Args:
        input (Tensor): ``(N, C, H, W)`` or ``(C, H, W)``.
        output_size (int | tuple): As for ``F.adaptive_avg_pool2d`` (``None`` keeps the size).
    """
    out_h, out_w = _pair(output_size)
    height, width = input.shape[-2], input.shape[-1]
    if out_h is not None:
        input = torch.matmul(adaptive_pool_matrix(height, int(out_h), input.dtype), input)
    if out_w is not None:
        input = torch.matmul(input, adaptive_pool_matrix(width, int(out_w), input.dtype).t())
    return input
