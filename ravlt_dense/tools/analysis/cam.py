"""Class activation maps of mmdet 3.x detectors and mmseg 1.x segmentors at any named layer:
Grad-CAM and HiResCAM (from the gradient of a score) and EigenCAM (gradient-free).

The three read the output of one module (a name of ``model.named_modules()``, such as
``backbone.layers.1`` or ``neck.fpn_convs.0``) during the model's own test-time forward
(``model(inputs, data_samples, mode='predict')`` after the config's test pipeline and
``model.data_preprocessor``), so the map explains the prediction the detector or segmentor
actually makes:

* Grad-CAM: the activations A (C x h x w) weighted per channel by the spatial mean of
  d score / d A, summed over channels, negative evidence clipped at 0. One weight per channel
  makes it class-specific rather than instance-specific: where a detector's score reads only
  the detection's box, Grad-CAM still lights up every place with the channels of its class
  (another object of the class, say).
* HiResCAM: d score / d A times A, position by position, summed over channels, clipped at 0:
  the first-order share of each position in the score, so zero wherever the score does not
  depend on the layer; the map of one detection stays on that detection.
* EigenCAM: A projected on its first principal direction (the leading right singular vector of
  A as an (h*w) x C matrix), signed so that the positions that stand out are positive. It
  shows what the layer responds to most, whatever the target: every salient object.

The score that Grad-CAM and HiResCAM take the gradient of:

* detector: the score the detector reports for one kept detection. mmdet's test path takes
  each kept detection's score from the classifier's scores by index (NMS picks indices, and
  ``batched_nms`` returns ``scores[keep]``; one-stage and DETR-like heads gather by ``topk``),
  so with gradients enabled ``pred_instances.scores[i]`` is a differentiable function of the
  features: the exact number mmdet prints, for any mmdet detector, with no boxes re-scored
  through a head outside the model's own forward.
* segmentor: the sum of one class's logits (``seg_logits``) over the pixels predicted as that
  class.

The maps are resized from the layer's resolution to the network input, cropped to the image
without its padding and resized to the original image, so they overlay it pixel for pixel.

The ``grad-cam`` package would do the arithmetic, but it requires torchvision, and PyPI's
torchvision fails to load beside the CPU build of torch this project pins ("operator
torchvision::nms does not exist"); a forward hook and ``torch.autograd.grad`` are all the two
methods need.
"""
import difflib
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

METHODS = ('gradcam', 'hirescam', 'eigencam')
METHOD_TITLES = {'gradcam': 'Grad-CAM', 'hirescam': 'HiResCAM', 'eigencam': 'EigenCAM'}
GRADIENT_METHODS = ('gradcam', 'hirescam')


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------
class CAMError(ValueError):
    """A map that cannot be made, and why."""


class LayerError(CAMError):
    """A layer name that names no module, or a module whose output makes no map."""


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The module ``name`` of ``model`` (as ``model.named_modules()`` names it).

    Raises:
        LayerError: naming the deepest part of ``name`` that exists, its sub-modules, the
            closest names of the model and its top-level modules.
    """
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    parent = name
    while parent and parent not in modules:
        parent = parent.rpartition('.')[0]
    children = [f'{parent}.{child}' if parent else child
                for child, _ in modules[parent].named_children()]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.6)
    lines = [f'no layer {name!r} in the model ({type(model).__name__}).']
    if parent:
        lines.append(f'{parent} has: {", ".join(children[:20]) or "no sub-modules"}'
                     + (' ...' if len(children) > 20 else ''))
    if close:
        lines.append(f'close names: {", ".join(close)}')
    top = [n for n, _ in model.named_children() if n != 'data_preprocessor']
    lines.append(f'top-level modules: {", ".join(top)}')
    lines.append('(--preview-model lists every layer name)')
    raise LayerError('\n  '.join(lines))


def default_layer(model: nn.Module) -> str:
    """The output of the backbone's second stage (stride 8): ``backbone.layers.1`` of RAVLT,
    ``backbone.layer2`` of ResNet, ``backbone.stages.1`` of ConvNeXt; of a stage that returns
    its downsampled output first (mmdet's Swin) its last block, of a stage that is a list of
    modules (mmdet's PVT) its last module.

    Every detection's and every class's score depends on it (the backbone runs in sequence,
    whichever pyramid level a head reads), and on the quick-start models its maps stay on the
    objects: RAVLT's third stage attends globally (softmax over every position), so the
    gradient at its output spreads over the image (docs/analysis/cam.md has the counts).

    Raises:
        LayerError: for a backbone without a known list of stages (name a layer instead).
    """
    backbone = getattr(model, 'backbone', None)
    res_layers = getattr(backbone, 'res_layers', None)  # mmdet/mmseg ResNet: 'layer1'...
    if isinstance(res_layers, (list, tuple)) and len(res_layers) >= 2:
        return f'backbone.{res_layers[1]}'
    for attr in ('layers', 'stages'):
        stages = getattr(backbone, attr, None)
        if isinstance(stages, (nn.ModuleList, nn.Sequential)) and len(stages) >= 2:
            stage, name = stages[1], f'backbone.{attr}.1'
            if isinstance(stage, nn.ModuleList):  # not called itself: its parts are
                return f'{name}.{len(stage) - 1}'
            if type(stage).__name__ == 'SwinBlockSequence':
                return f'{name}.blocks.{len(stage.blocks) - 1}'
            return name
    raise LayerError(f'no default layer for {type(backbone or model).__name__}: name one '
                     '(e.g. backbone.layers.1, neck.fpn_convs.0; --preview-model lists them)')


def layer_tensor(output) -> torch.Tensor:
    """The tensor of a module's output that the maps are made of: the output itself, or the
    first tensor of a tuple or list (a RAVLT stage returns its feature map, then the next
    stage's input)."""
    if isinstance(output, (tuple, list)):
        tensors = [o for o in output if isinstance(o, torch.Tensor)]
        if not tensors:
            raise LayerError(f'it returns a {type(output).__name__} without tensors')
        output = tensors[0]
    if not isinstance(output, torch.Tensor):
        raise LayerError(f'it returns a {type(output).__name__}, not a tensor')
    if output.dim() not in (3, 4):
        raise LayerError(f'it returns a tensor of shape {tuple(output.shape)}, where a map '
                         '(B, C, h, w) or tokens (B, N, C) is needed')
    return output


def as_spatial(tensor: torch.Tensor, input_hw: Tuple[int, int]) -> torch.Tensor:
    """A layer's output (or its gradient) as a (B, C, h, w) map: tokens (B, N, C) are laid out
    on the grid whose aspect ratio is the input's (the h x w = N closest to it)."""
    if tensor.dim() == 4:
        return tensor
    batch, tokens, channels = tensor.shape
    height, width = token_grid(tokens, input_hw)
    return tensor.transpose(1, 2).reshape(batch, channels, height, width)


def token_grid(tokens: int, input_hw: Tuple[int, int]) -> Tuple[int, int]:
    """(h, w) with h * w == tokens and h / w closest to the input's aspect ratio."""
    ratio = input_hw[0] / input_hw[1]
    pairs = [(h, tokens // h) for h in range(1, tokens + 1) if tokens % h == 0]
    return min(pairs, key=lambda hw: abs(np.log(hw[0] / hw[1] / ratio)))


@contextmanager
def captured_outputs(model: nn.Module, layers: Sequence[str]
                     ) -> Iterator[Dict[str, List[torch.Tensor]]]:
    """While inside: every output of the named modules (:func:`layer_tensor`), in call order.

    A module called several times in one forward (a head shared by the pyramid's levels)
    gives several outputs. The tensors are the model's own, in the autograd graph (gradients
    are taken with respect to them, then laid out by :func:`as_spatial`); their version counter
    is checked on exit, as a later in-place change would make their gradients wrong.
    """
    found: Dict[str, List[torch.Tensor]] = {name: [] for name in layers}
    versions: Dict[str, List[int]] = {name: [] for name in layers}
    unusable: Dict[str, str] = {}

    def hook(name):
        def record(module, args, output):
            try:
                tensor = layer_tensor(output)
            except LayerError as err:  # raised after the forward, not from inside the model
                unusable.setdefault(name, str(err))
                return
            found[name].append(tensor)
            versions[name].append(tensor._version)
        return record

    handles = [find_layer(model, name).register_forward_hook(hook(name)) for name in layers]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()
    for name in layers:
        if name in unusable:
            raise LayerError(f'the layer {name} makes no map: {unusable[name]} (choose a '
                             'convolution, a stage or a block; --preview-model lists them)')
        if not found[name]:
            raise LayerError(f'the layer {name} did not run in the forward pass: choose one '
                             'that does (--preview-model lists the layers)')
        if any(t._version != v for t, v in zip(found[name], versions[name])):
            raise LayerError(f'the output of {name} is changed in place later in the forward, '
                             'so its gradient cannot be read: choose the module after it')


# ------------------------------------------------------------------------------------------
# The two methods, on one map (C, h, w)
# ------------------------------------------------------------------------------------------
def grad_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) of one (C, h, w) map and its gradient: channels
    weighted by their mean gradient, summed, clipped at 0 (evidence for the score only)."""
    weights = gradient.mean(dim=(1, 2), keepdim=True)
    return (weights * activation).sum(0).clamp(min=0)


def hires_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos and Carin, 2020) of one (C, h, w) map and its gradient: the
    element-wise product summed over channels, clipped at 0."""
    return (gradient * activation).sum(0).clamp(min=0)


def eigen_cam(activation: torch.Tensor) -> torch.Tensor:
    """EigenCAM (Muhammad and Yeasin, 2020) of one (C, h, w) map: its positions (an (h*w, C)
    matrix, centred) projected on their first principal direction, clipped at 0.

    Centred: uncentred, the leading direction is the mean activation, often the background's
    (where objects' channels are orthogonal to it, as after a layer norm, they project to 0).
    A principal direction's sign is arbitrary: it is taken so that the projections' long tail,
    the few positions that stand out from the rest (objects on a background), is positive:
    their third central moment is positive.
    """
    channels, height, width = activation.shape
    positions = activation.reshape(channels, -1).T.double()
    positions = positions - positions.mean(dim=0)
    _, _, vh = torch.linalg.svd(positions, full_matrices=False)
    projection = positions @ vh[0]
    if (projection ** 3).sum() < 0:
        projection = -projection
    return projection.clamp(min=0).reshape(height, width).float()


GRADIENT_CAMS = {'gradcam': grad_cam, 'hirescam': hires_cam}


# ------------------------------------------------------------------------------------------
# From the layer's grid to the image
# ------------------------------------------------------------------------------------------
def to_image(cam: torch.Tensor, metainfo: dict, input_hw: Tuple[int, int]) -> np.ndarray:
    """A (h, w) map over the network input (``input_hw``) -> float32 (H, W) over the original
    image.

    The network input is the resized image (``img_shape``) padded (mmdet pads right and
    bottom; mmseg records its ``padding_size``: left, right, top, bottom): the map is resized
    to the input, cropped to the image and resized to ``ori_shape``.
    """
    full = F.interpolate(cam[None, None].float(), size=tuple(input_hw), mode='bilinear',
                         align_corners=False)[0, 0]
    left, _, top, _ = (metainfo.get('padding_size') or metainfo.get('img_padding_size')
                       or (0, 0, 0, 0))
    height, width = metainfo['img_shape'][:2]
    image = full[top:top + height, left:left + width]
    image = F.interpolate(image[None, None], size=tuple(metainfo['ori_shape'][:2]),
                          mode='bilinear', align_corners=False)[0, 0]
    return image.detach().cpu().numpy().astype(np.float32)


def normalised(cam: np.ndarray) -> np.ndarray:
    """``cam`` scaled to [0, 1] (its maximum to 1; an all-zero map stays 0)."""
    cam = np.clip(cam, 0, None)
    top = cam.max()
    return cam / top if top > 0 else cam


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------
@dataclass
class Target:
    """What a map explains: a detection (``index`` into ``pred_instances``, its ``box`` x1 y1
    x2 y2 in original-image pixels) or a class's predicted pixels (``mask``)."""
    label: int
    class_name: str
    score: float
    index: Optional[int] = None
    box: Optional[List[float]] = None
    mask: Optional[np.ndarray] = field(default=None, repr=False)

    def label_text(self) -> str:
        """'circle 0.87' for a detection, the class's name for a segmentation target."""
        return self.class_name + (f' {self.score:.2f}' if self.box is not None else '')

    def describe(self) -> str:
        if self.box is not None:
            box = ', '.join(f'{v:.0f}' for v in self.box)
            return f'detection {self.index}: {self.class_name} {self.score:.2f} [{box}]'
        return f'class {self.class_name}: {self.score:.0%} of the pixels'


def class_index(classes: Sequence[str], name: str) -> int:
    """The index of class ``name``; ValueError listing the model's classes."""
    if name not in classes:
        shown = ', '.join(classes[:40]) + (' ...' if len(classes) > 40 else '')
        raise ValueError(f'class {name!r} is not one of the model\'s {len(classes)} classes: '
                         f'{shown}')
    return list(classes).index(name)


def detection_target(sample, classes: Sequence[str], rank: int = 0,
                     class_name: Optional[str] = None) -> Tuple[Optional[Target], Callable]:
    """The detection of ``sample`` (a DetDataSample from ``mode='predict'``) at place ``rank``
    of the detections sorted by score (of ``class_name`` only, if given), and a function giving
    its differentiable score. (None, None) when there is no such detection.
    """
    instances = sample.pred_instances
    scores, labels = instances.scores.detach(), instances.labels
    order = torch.argsort(scores, descending=True)
    if class_name is not None:
        wanted = class_index(classes, class_name)
        order = order[labels[order] == wanted]
    if rank >= len(order):
        return None, None
    index = int(order[rank])
    label = int(labels[index])
    target = Target(label=label, class_name=classes[label] if label < len(classes) else str(label),
                    score=float(scores[index]), index=index,
                    box=[float(v) for v in instances.bboxes[index].detach().cpu()])
    return target, lambda s: s.pred_instances.scores[index]


def segmentation_target(sample, classes: Sequence[str], class_name: Optional[str] = None
                        ) -> Tuple[Optional[Target], Callable]:
    """Class ``class_name`` of ``sample`` (a SegDataSample from ``mode='predict'``; default:
    the class predicted on most pixels) and a function giving the sum of its logits over the
    pixels predicted as it. (None, None) when no pixel is predicted as the class."""
    pred = sample.pred_sem_seg.data[0].detach()
    if class_name is None:
        label = int(torch.bincount(pred.flatten()).argmax())
    else:
        label = class_index(classes, class_name)
    mask = pred == label
    if not mask.any():
        return None, None
    target = Target(label=label, class_name=classes[label], score=float(mask.float().mean()),
                    mask=mask.cpu().numpy())
    return target, lambda s: s.seg_logits.data[label][mask].sum()


@contextmanager
def dense_head_scores_attached() -> Iterator[None]:
    """While inside, mmdet's dense heads (RetinaNet, FCOS, ATSS, the RPN ...) post-process
    their class scores without detaching them.

    ``BaseDenseHead.predict_by_feat`` and its kin take each image's scores through
    ``select_single_mlvl(..., detach=True)``: inference needs no gradient, and training must
    not send one through the proposals. The kept detections' scores are then gathered from
    those scores by index, as in the RoI heads, so with them attached the one-stage detectors'
    reported scores are differentiable too. Every mmdet module that imported the function
    gets the attached one until the block ends.
    """
    try:
        from mmdet.models.utils import misc
    except ImportError:  # no mmdet: nothing to attach
        yield
        return
    original = misc.select_single_mlvl

    def attached(mlvl_tensors, batch_id, detach=True):
        return original(mlvl_tensors, batch_id, detach=False)

    users = [module for name, module in list(sys.modules.items())
             if name.startswith('mmdet.') and getattr(module, 'select_single_mlvl', None)
             is original]
    for module in users:
        module.select_single_mlvl = attached
    try:
        yield
    finally:
        for module in users:
            module.select_single_mlvl = original


# ------------------------------------------------------------------------------------------
# Running a model
# ------------------------------------------------------------------------------------------
def task_of(model: nn.Module) -> str:
    """'det' for an mmdet detector, 'seg' for an mmseg segmentor (by the data samples their
    predict path produces, which is what the targets read)."""
    module = type(model).__module__
    if module.startswith('mmseg') or hasattr(model, 'decode_head'):
        return 'seg'
    if module.startswith('mmdet') or hasattr(model, 'bbox_head') or hasattr(model, 'roi_head'):
        return 'det'
    raise CAMError(f'{type(model).__name__} is neither an mmdet detector nor an mmseg '
                   'segmentor')


def model_inputs(model: nn.Module, pipeline: Callable, image: Union[str, np.ndarray]) -> dict:
    """One image (a path or a BGR array) through the test pipeline and the model's data
    preprocessor: ``dict(inputs=(1, 3, H, W) tensor, data_samples=[sample])``."""
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(pseudo_collate([pipeline(image)]), False)


@dataclass
class CAMResult:
    """The maps (method -> layer -> float32 (H, W) in [0, 1] over the original image) of one
    target of one image, and the model's prediction for it."""
    target: Target
    maps: Dict[str, Dict[str, np.ndarray]]
    sample: object = field(repr=False)


def class_activation_maps(model: nn.Module, data: dict, layers: Sequence[str],
                          methods: Sequence[str] = METHODS,
                          choose: Optional[Callable] = None) -> Optional[CAMResult]:
    """The maps of ``methods`` at ``layers`` for one preprocessed image (:func:`model_inputs`).

    Args:
        model: An mmdet detector or mmseg segmentor in eval mode.
        data: ``dict(inputs, data_samples)`` of one image.
        layers: Module names (``model.named_modules()``).
        methods: Some of :data:`METHODS`.
        choose: ``sample -> (Target, score_fn)`` (:func:`detection_target` or
            :func:`segmentation_target` with their options bound); the default takes the
            top-scoring detection or the largest predicted class.

    Returns:
        The result, or None when the image has no such target (no detection, a class that is
        not predicted).
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f'unknown CAM method(s) {sorted(unknown)}: choose from {METHODS}')
    classes = list((getattr(model, 'dataset_meta', None) or {}).get('classes') or [])
    if choose is None:
        task = task_of(model)
        choose = (lambda s: detection_target(s, classes)) if task == 'det' else \
            (lambda s: segmentation_target(s, classes))
    gradient_methods = [m for m in methods if m in GRADIENT_METHODS]
    # The input requires grad so that every layer's output joins the graph, those of frozen
    # stages (no trainable parameters before them) included. EigenCAM alone needs no graph.
    inputs = data['inputs'].detach().float().requires_grad_(bool(gradient_methods))
    with torch.set_grad_enabled(bool(gradient_methods)), dense_head_scores_attached(), \
            captured_outputs(model, layers) as outputs:
        sample = model(inputs, data['data_samples'], mode='predict')[0]
    target, score_of = choose(sample)
    if target is None:
        return None
    metainfo, input_hw = sample.metainfo, tuple(inputs.shape[-2:])
    maps: Dict[str, Dict[str, np.ndarray]] = {method: {} for method in methods}
    if gradient_methods:
        score = score_of(sample)
        if score.grad_fn is None:
            raise CAMError('the score of the target carries no gradient (the model\'s predict '
                           'path detaches it): use --method eigencam')
        activations = [a for layer in layers for a in outputs[layer]]
        grads = iter(torch.autograd.grad(score, activations, allow_unused=True))
        for layer in layers:
            # zero where the score does not depend on the layer (a pyramid level that no RoI
            # of the detection is pooled from)
            totals = {m: np.zeros(metainfo['ori_shape'][:2], np.float32)
                      for m in gradient_methods}
            for activation in outputs[layer]:
                grad = next(grads)
                if grad is None:
                    continue
                for method in gradient_methods:
                    cam = GRADIENT_CAMS[method](as_spatial(activation, input_hw)[0].detach(),
                                                as_spatial(grad, input_hw)[0])
                    totals[method] += to_image(cam, metainfo, input_hw)
            for method in gradient_methods:
                maps[method][layer] = normalised(totals[method])
    if 'eigencam' in methods:
        for layer in layers:
            total = sum(to_image(eigen_cam(as_spatial(a, input_hw)[0].detach()), metainfo,
                                 input_hw) for a in outputs[layer])
            maps['eigencam'][layer] = normalised(total)
    return CAMResult(target=target, maps=maps, sample=sample)


def cam_peak(cam: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the maximum of a map."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(x), int(y)


def target_region(target: Target, shape: Tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the target: the detection's box (pixels it touches) or the
    class's predicted pixels."""
    if target.mask is not None:
        return target.mask.astype(bool)
    region = np.zeros(shape, bool)
    x1, y1, x2, y2 = target.box
    region[int(np.floor(y1)):int(np.ceil(y2)) + 1, int(np.floor(x1)):int(np.ceil(x2)) + 1] = True
    return region


def pointing(cam: np.ndarray, target: Target) -> Dict[str, float]:
    """How well a map points at its target: whether its peak lies in the target's region
    (the pointing game) and the share of its sum there (the energy-based pointing game)."""
    region = target_region(target, cam.shape)
    x, y = cam_peak(cam)
    total = float(cam.sum())
    return dict(peak_in_target=bool(region[y, x]),
                energy_in_target=float(cam[region].sum()) / total if total > 0 else 0.0)


# ------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------
def overlay(image_rgb: np.ndarray, cam: np.ndarray, target: Target,
            alpha: float = 0.5) -> np.ndarray:
    """The map as a heat map over the image (mmengine's ``Visualizer.draw_featmap``) with the
    detection's box and its class and score, or the outline of the class's pixels: RGB uint8.
    """
    import cv2
    from mmengine.visualization import Visualizer
    heat = Visualizer.draw_featmap(torch.from_numpy(cam)[None], overlaid_image=image_rgb,
                                   channel_reduction=None, topk=0, alpha=alpha)
    heat = np.ascontiguousarray(heat)
    thickness = max(1, round(max(heat.shape[:2]) / 300))
    if target.box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in target.box)
        cv2.rectangle(heat, (x1, y1), (x2, y2), (255, 255, 255), thickness + 1)
        cv2.rectangle(heat, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        text = target.label_text()
        scale = max(0.3, max(heat.shape[:2]) / 1500)
        (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y1 - height - base - 2 if y1 - height - base - 2 >= 0 else y2 + 1
        cv2.rectangle(heat, (x1, top), (x1 + width + 2, top + height + base + 2), (0, 0, 0),
                      -1)
        cv2.putText(heat, text, (x1 + 1, top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    if target.mask is not None:
        contours, _ = cv2.findContours(target.mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(heat, contours, -1, (255, 255, 255), thickness)
    return heat
