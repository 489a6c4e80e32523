"""mmcv's compiled ops that the detectors need (NMS, RoIAlign) and a deformable convolution,
each against a plain-torch formula on every device, and on a GPU its CUDA kernel against its
CPU kernel, gradients included. On a GPU machine these tell whether the CUDA build of mmcv works
(``python -m pytest tests -m gpu``).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops import DeformConv2d, ModulatedDeformConv2d, nms, roi_align

pytestmark = pytest.mark.gpu

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
DEVICES = ['cpu', pytest.param('cuda', marks=CUDA)]


def random_boxes(n, size=64.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def greedy_nms(boxes, scores, iou_threshold):
    """The textbook NMS: take the best box, drop those overlapping it by more than the
    threshold, repeat."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep, order = [], scores.argsort(descending=True).tolist()
    while order:
        i, order = order[0], order[1:]
        keep.append(i)
        rest = torch.tensor(order, dtype=torch.long)
        if not order:
            break
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (area[i] + area[rest] - inter)
        order = [j for j, o in zip(order, iou.tolist()) if o <= iou_threshold]
    return keep


@pytest.mark.parametrize('device', DEVICES)
def test_nms_is_greedy_nms(device):
    boxes, scores = random_boxes(300)
    _, keep = nms(boxes.to(device), scores.to(device), 0.5)
    expected = greedy_nms(boxes, scores, 0.5)
    assert 10 < len(expected) < 300  # the case suppresses some boxes, not all
    assert keep.cpu().tolist() == expected


def bilinear_roi_align(feat, rois, out_size, sampling_ratio):
    """RoIAlign (aligned, average of sampling_ratio^2 bilinear samples per bin) by grid_sample,
    for RoIs clear of the border (where mmcv's clamping would differ)."""
    n, _, h, w = feat.shape
    out = []
    for b, x1, y1, x2, y2 in rois.tolist():
        x1, y1, x2, y2 = x1 - 0.5, y1 - 0.5, x2 - 0.5, y2 - 0.5  # aligned: pixel centres
        steps = (torch.arange(out_size * sampling_ratio, dtype=feat.dtype) + 0.5) / (
            out_size * sampling_ratio)
        xs, ys = x1 + steps * (x2 - x1), y1 + steps * (y2 - y1)
        gy, gx = torch.meshgrid(2 * ys / (h - 1) - 1, 2 * xs / (w - 1) - 1, indexing='ij')
        grid = torch.stack([gx, gy], dim=-1)[None].to(feat.device)
        samples = F.grid_sample(feat[int(b):int(b) + 1], grid, align_corners=True)
        out.append(F.avg_pool2d(samples, sampling_ratio))
    return torch.cat(out)


@pytest.mark.parametrize('device', DEVICES)
def test_roi_align_is_bilinear_sampling(device):
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 24, 20, dtype=torch.float64)
    rois = torch.tensor([[0, 2.0, 3.0, 15.5, 11.0], [1, 4.3, 1.7, 9.9, 20.2],
                         [1, 1.5, 1.5, 18.0, 6.0]], dtype=torch.float64)
    got = roi_align(feat.to(device), rois.to(device), (4, 4), 1.0, 2, 'avg', True)
    expected = bilinear_roi_align(feat, rois, 4, 2)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-9, atol=1e-9)


def shifted_conv(x, weight, dx):
    """A 3x3 convolution (padding 1) whose every tap reads the input ``dx`` (0 or 1) pixels to
    the right, with zeros outside the image: a deformable convolution with offset (0, dx)."""
    padded = F.pad(x, (1, 2, 1, 1))
    return F.conv2d(padded[..., 1 - dx:padded.shape[-1] - dx], weight)


@pytest.mark.parametrize('device', DEVICES)
def test_deform_conv_with_uniform_offsets_is_a_shifted_conv(device):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    conv = DeformConv2d(4, 6, 3, padding=1).to(device)
    offset = torch.zeros(2, 18, 9, 11)
    offset[:, 1::2] = 0.5  # (dy, dx) per tap: half a pixel to the right, bilinear
    with torch.no_grad():
        got = conv(x.to(device), offset.to(device)).cpu()
        weight = conv.weight.cpu()
        expected = 0.5 * (shifted_conv(x, weight, 0) + shifted_conv(x, weight, 1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
def test_modulated_deform_conv_with_zero_offsets_is_a_masked_conv(device):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    conv = ModulatedDeformConv2d(4, 6, 3, padding=1).to(device)
    offset, mask = torch.zeros(2, 18, 9, 11), torch.full((2, 9, 9, 11), 0.25)
    with torch.no_grad():
        got = conv(x.to(device), offset.to(device), mask.to(device)).cpu()
        expected = F.conv2d(0.25 * x, conv.weight.cpu(), conv.bias.cpu(), padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def forward_backward(fn, *inputs):
    """fn(*inputs) and the gradients of a fixed read-out of it wrt every floating input."""
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*inputs)
    (out * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum().backward()
    return [out.detach().cpu()] + [t.grad.cpu() for t in inputs if t.grad is not None]


@CUDA
def test_cuda_kernels_match_the_cpu_kernels():
    torch.manual_seed(0)
    boxes, scores = random_boxes(2000, size=512.0)
    assert nms(boxes.cuda(), scores.cuda(), 0.6)[1].cpu().tolist() == \
        nms(boxes, scores, 0.6)[1].tolist()

    feat = torch.randn(2, 8, 40, 48)
    rois = torch.cat([torch.randint(0, 2, (64, 1)).float(), random_boxes(64, size=40.0)[0]], 1)
    def align(f, r):  # noqa: E306
        return roi_align(f, r, (7, 7), 0.5, 2, 'avg', True)
    for got, expected in zip(forward_backward(align, feat.cuda(), rois.cuda()),
                             forward_backward(align, feat, rois)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    conv = DeformConv2d(8, 16, 3, padding=1)
    x, offset = torch.randn(2, 8, 20, 24), torch.randn(2, 18, 20, 24) * 2
    expected = forward_backward(conv, x, offset)
    got = forward_backward(copy.deepcopy(conv).cuda(), x.cuda(), offset.cuda())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-3)
