"""The effective receptive field (ERF) of a backbone, measured as RepLKNet measures it (Ding et
al., "Scaling Up Your Kernels to 31x31", CVPR 2022):

1. for each image, the gradient of the centre point of one stage's output map with respect to
   the input image, summed over the colour channels. The centre point is the sum over the
   map's channels of their ReLU, as in RepLKNet's code: a plain sum over the channels of a
   LayerNorm'd map (RAVLT's and Swin's outputs, whose norms start at weight 1 and bias 0)
   is a constant, whose gradient is zero. The gradient is taken as its absolute value
   (``grad='abs'``) or, as RepLKNet's code does, rectified (``grad='relu'``);
2. the mean of these maps over the images: the contribution score of each input pixel;
3. for display and for the area table, ``log10(score + 1)`` rescaled to a maximum of 1 (the
   scores of different models differ by orders of magnitude);
4. for a share t of the total (log-scaled) contribution, the smallest square centred on the
   image centre that holds at least t of it, as a fraction of the image area: RepLKNet's table
   gives t = 20%, 30%, 50% and 99%. A model whose ERF is one pixel has 1 / (H W) at every t; one
   whose ERF covers the input evenly needs about t of the area.

Works on any ``nn.Module`` whose forward maps a (1, 3, H, W) image to a feature map or to a
sequence of them (an mmdet / mmseg backbone, a timm ``features_only`` network, RAVLT).
"""
from typing import Callable, Dict, Iterable, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)  # RepLKNet's table
GRADS = ('abs', 'relu')


class StageMap(NamedTuple):
    """What one forward pass says about the chosen stage: its map's size and its stride."""
    index: int  # the output's position (negative indices resolved)
    height: int
    width: int
    stride: int


def stage_output(outputs, stage: int) -> torch.Tensor:
    """The ``stage``-th (N, C, h, w) map of a backbone's outputs (one tensor or a sequence).

    Raises:
        IndexError: ``stage`` is not one of the outputs (the message lists the valid ones).
        ValueError: the chosen output is not a 4-d map.
    """
    maps = [outputs] if torch.is_tensor(outputs) else list(outputs)
    if not -len(maps) <= stage < len(maps):
        raise IndexError(f'stage {stage} is out of range: the backbone returns {len(maps)} '
                         f'feature map(s): choose a stage in 0..{len(maps) - 1} (or -1 for the '
                         'last)')
    feature = maps[stage]
    if not torch.is_tensor(feature) or feature.dim() != 4:
        shape = tuple(feature.shape) if torch.is_tensor(feature) else type(feature).__name__
        raise ValueError(f'output {stage} of the backbone is not an (N, C, H, W) map: {shape}')
    return feature


def stage_geometry(input_hw: Sequence[int], outputs, stage: int) -> StageMap:
    """The size and stride of the chosen stage's map for an input of ``input_hw``.

    The centre of the map must sit over the centre of the input, which holds when the map
    tiles the input exactly: ValueError (naming the size to use) when the stride does not
    divide the input's height and width.
    """
    feature = stage_output(outputs, stage)
    height, width = input_hw
    h, w = feature.shape[-2:]
    index = stage % len([outputs] if torch.is_tensor(outputs) else outputs)
    if height % h or width % w or height // h != width // w:
        stride = _likely_stride(height, width, h, w)
        fit = [max(stride, int(s / stride + 0.5) * stride) for s in (height, width)]  # ties up
        raise ValueError(
            f'shape {height}x{width} is not divisible by stage {index}: its map is {h}x{w} '
            f'(stride {stride}), so its centre is not over the image centre; use a multiple '
            f'of {stride}, e.g. --shape {fit[0]} {fit[1]}')
    stride = height // h
    return StageMap(index, h, w, stride)


def _likely_stride(height: int, width: int, h: int, w: int) -> int:
    """The stride behind an (h, w) map of a (height, width) input that it does not tile: the
    power of two whose padded (ceil) or cropped (floor) division gives the map, else the
    nearest whole ratio (e.g. a ViT's patch 14)."""
    for stride in (2**k for k in range(11)):
        if h in (-(-height // stride), height // stride) and \
                w in (-(-width // stride), width // stride):
            return stride
    return max(round(max(height / h, width / w)), 1)


def centre_score(feature: torch.Tensor) -> torch.Tensor:
    """The centre point of a (N, C, h, w) map: the sum of its channels' ReLU (and the batch's)."""
    h, w = feature.shape[-2:]
    return feature[:, :, h // 2, w // 2].relu().sum()


def probe_stage(backbone: nn.Module, image: torch.Tensor, stage: int = -1) -> StageMap:
    """The chosen stage's map size and stride for inputs like ``image`` (one forward pass
    without gradients, in eval mode): the checks of :func:`stage_geometry`, before long work."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            return stage_geometry(image.shape[-2:], backbone(image), stage)
    finally:
        backbone.train(was_training)


def _input_gradient(backbone: nn.Module, image: torch.Tensor, stage: int,
                    grad: str) -> Tuple[torch.Tensor, StageMap]:
    image = image.detach().requires_grad_(True)
    with torch.enable_grad():
        outputs = backbone(image)
        geometry = stage_geometry(image.shape[-2:], outputs, stage)
        score = centre_score(stage_output(outputs, stage))
        # Only the input's gradient: autograd.grad skips the weights' (they may need none).
        (gradient, ) = torch.autograd.grad(score, image)
    gradient = gradient.abs() if grad == 'abs' else gradient.relu()
    return gradient.sum(dim=(0, 1)), geometry


def input_gradient(backbone: nn.Module, image: torch.Tensor, stage: int = -1,
                   grad: str = 'abs') -> torch.Tensor:
    """The (H, W) contribution map of one normalised (1, 3, H, W) image: the gradient of the
    centre of stage ``stage``'s map (:func:`centre_score`) with respect to the image, as its
    absolute value (``grad='abs'``) or rectified (RepLKNet's ``'relu'``), summed over the
    colour channels.

    Raises:
        IndexError: ``stage`` is not one of the backbone's outputs.
        ValueError: the stage's stride does not divide the image's size (see
            :func:`stage_geometry`), or ``grad`` is unknown.
    """
    if grad not in GRADS:
        raise ValueError(f'grad must be one of {GRADS}, got {grad!r}')
    return _input_gradient(backbone, image, stage, grad)[0]


def log_scaled(scores: np.ndarray) -> np.ndarray:
    """RepLKNet's display scale: ``log10(scores + 1)``, rescaled to a maximum of 1 (all zeros
    stay zeros)."""
    heat = np.log10(np.asarray(scores, dtype=np.float64) + 1)
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def _square_sums(heat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For every half-side r = 0, 1, ... (until the square covers the image): the sum of
    ``heat`` over the square of side 2r + 1 centred on (H // 2, W // 2), clipped to the image,
    and the clipped square's area."""
    h, w = heat.shape
    cy, cx = h // 2, w // 2
    cumulative = np.zeros((h + 1, w + 1))
    cumulative[1:, 1:] = heat.cumsum(0).cumsum(1)
    radius = np.arange(max(cy, h - 1 - cy, cx, w - 1 - cx) + 1)
    top, bottom = np.maximum(cy - radius, 0), np.minimum(cy + radius + 1, h)
    left, right = np.maximum(cx - radius, 0), np.minimum(cx + radius + 1, w)
    sums = (cumulative[bottom, right] - cumulative[top, right] - cumulative[bottom, left]
            + cumulative[top, left])
    return sums, (bottom - top) * (right - left)


def area_shares(heat: np.ndarray,
                thresholds: Sequence[float] = THRESHOLDS) -> Dict[float, Tuple[int, float]]:
    """For each t of ``thresholds``: (side in pixels, share of the image area) of the smallest
    centred square that holds at least t of the total of ``heat`` (the log-scaled map).

    A square that reaches an edge is clipped there: its share is of the pixels it covers (and
    its side at most the image's longer side). An
    all-zero map (no contribution at all) gives the one centre pixel.
    """
    heat = np.asarray(heat, dtype=np.float64)
    sums, areas = _square_sums(heat)
    total = sums[-1]
    shares = {}
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f'thresholds are shares of the total in (0, 1], got {t}')
        # the first square at or above t (a rounding margin keeps t = 1 reachable)
        r = int(np.argmax(sums >= t * total * (1 - 1e-12))) if total > 0 else 0
        shares[t] = (min(2 * r + 1, max(heat.shape)), float(areas[r]) / heat.size)
    return shares


class ERFResult(NamedTuple):
    scores: np.ndarray  # mean contribution per input pixel (H x W), float64
    heat: np.ndarray  # log_scaled(scores)
    shares: Dict[float, Tuple[int, float]]  # area_shares(heat): t -> (side, share of the area)
    stage: StageMap
    images: int  # images averaged
    skipped: int  # images left out (gradient not finite)


def effective_receptive_field(backbone: nn.Module, images: Iterable[torch.Tensor],
                              stage: int = -1, grad: str = 'abs',
                              thresholds: Sequence[float] = THRESHOLDS,
                              progress: Optional[Callable[[], None]] = None) -> ERFResult:
    """The ERF of ``backbone``'s stage ``stage`` over normalised (1, 3, H, W) ``images`` (on the
    backbone's device, all of one size; any iterable, read one at a time): the mean
    contribution map, its log-scaled heat map and RepLKNet's area table. Images whose gradient
    is not finite are left out, as RepLKNet leaves them out. The backbone runs in eval mode
    (its mode is restored afterwards); ``progress`` is called once per image.

    Raises:
        IndexError: ``stage`` is not one of the backbone's outputs.
        ValueError: the stage's stride does not divide the input size, the images differ in
            size, no image gave a finite gradient, or every gradient is zero.
    """
    if grad not in GRADS:
        raise ValueError(f'grad must be one of {GRADS}, got {grad!r}')
    was_training = backbone.training
    backbone.eval()
    total, geometry, used, skipped = None, None, 0, 0
    try:
        for image in images:
            contribution, geometry = _input_gradient(backbone, image, stage, grad)
            if total is not None and contribution.shape != total.shape:
                raise ValueError(f'the images differ in size: {tuple(total.shape)} and '
                                 f'{tuple(contribution.shape)}')
            if torch.isfinite(contribution).all():
                contribution = contribution.double()
                total = contribution if total is None else total + contribution
                used += 1
            else:
                skipped += 1
            if progress is not None:
                progress()
    finally:
        backbone.train(was_training)
    if not used:
        raise ValueError('no images to measure the ERF on' if not skipped else
                         f'no image gave a finite gradient ({skipped} tried)')
    scores = (total / used).cpu().numpy()
    if not scores.any():  # would read as a one-pixel ERF
        raise ValueError(f'the centre of stage {geometry.index} does not depend on the input: '
                         f'its gradient is zero on all {used} image(s) (its channels are all '
                         'negative there, or the map is constant)')
    heat = log_scaled(scores)
    return ERFResult(scores, heat, area_shares(heat, thresholds), geometry, used, skipped)
