"""RAVLT without pretrained weights starts as the authors' release does: every conv truncated
normal (std 0.02, bounds -2 and 2) with zero bias, LayerNorms 1 and 0, BatchNorm, layer scales
and RoPE angles as built; with pretrained weights the file gives every weight."""
import math
from unittest import mock

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ravlt_dense.models.backbones import ravlt
from ravlt_dense.models.backbones.ravlt import RAVLT, modules_in_release_order

from conftest import TINY_ARCH, pretrained, randomised

STD = 0.02
# TINY_ARCH widened so that every conv has enough weights for a sample std (>= 288)
SMALL = dict(TINY_ARCH, embed_dims=[32, 64, 96, 128])


def release_init_violations(model, rel_tol=0.15):
    """What in ``model`` does not look like the release's initialisation: per conv / linear
    weight a sample std within ``rel_tol`` of 0.02 (at least 288 values each: 5 standard
    errors at most), all values within the absolute bounds (-2, 2); zero biases; LayerNorm
    weight 1 and bias 0. PyTorch's default init fails it (kaiming-uniform weights, std
    1/sqrt(3 fan_in): 0.19 for a 3x3 depth-wise conv; biases not 0)."""
    problems = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            assert w.numel() >= 288, name  # the tolerance's premise
            if abs(w.std().item() / STD - 1) > rel_tol:
                problems.append(f'{name}.weight std {w.std().item():.4f}')
            if w.abs().max() > 2:
                problems.append(f'{name}.weight beyond the bounds')
            if m.bias is not None and m.bias.detach().abs().max() != 0:
                problems.append(f'{name}.bias not 0')
        elif isinstance(m, nn.LayerNorm):
            if not (torch.equal(m.weight, torch.ones_like(m.weight))
                    and torch.equal(m.bias, torch.zeros_like(m.bias))):
                problems.append(f'{name} not 1 / 0')
    return problems


def conv_weights(model):
    return torch.cat([m.weight.detach().flatten() for m in model.modules()
                      if isinstance(m, nn.Conv2d)])


@pytest.mark.parametrize('arch', ['t', 's'])
def test_init_cfg_none_initialises_as_the_release(arch):
    torch.manual_seed(0)
    model = RAVLT(arch, init_cfg=None)
    assert len(release_init_violations(model)) > 50  # PyTorch's default init fails the check
    model.init_weights()
    assert model.is_init
    assert release_init_violations(model) == []
    weights = conv_weights(model)
    assert weights.std().item() == pytest.approx(STD, rel=0.01)
    # trunc_normal_'s bounds are absolute (-2, 2) = 100 std: in effect a plain normal, not one
    # cut at 2 std (0.04), where 4.55 % of a normal's values lie beyond
    assert (weights.abs() > 2 * STD).float().mean().item() == pytest.approx(0.0455, abs=0.003)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # the release has none


def test_batchnorm_layer_scales_and_rope_keep_their_values():
    arch = dict(SMALL, layer_scale_init=[1., 0.5, 1e-6, 2.])
    model = RAVLT(arch)
    with torch.no_grad():  # values the release's initialisation would not give
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-1, 1), m.running_mean.normal_()
    kept = {k: v.clone() for k, v in model.state_dict().items()
            if '.gamma_' in k or 'RoPE.angle' in k or 'patch_embed.proj.1.' in k
            or 'patch_embed.proj.10.' in k or 'downsample.norm' in k}
    assert len(kept) == 2 * 5 + 4 + 2 * 5 + 3 * 5  # gammas, angles, two stem BNs, 3 downsamples
    model.init_weights()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in kept.items())
    assert model.layers[2].blocks[0].gamma_1.flatten()[0].item() == pytest.approx(1e-6)
    assert release_init_violations(model) == []


def timm_trunc_normal_(tensor, std, a=-2., b=2.):
    """The ``trunc_normal_`` of timm (which the release imports), written out: the inverse
    normal CDF of one uniform draw per value (torch 2.13's own samples differently)."""
    def norm_cdf(x):
        return (1. + math.erf(x / math.sqrt(2.))) / 2.
    lower, upper = norm_cdf(a / std), norm_cdf(b / std)
    return tensor.uniform_(2 * lower - 1, 2 * upper - 1).erfinv_().mul_(
        std * math.sqrt(2.)).clamp_(min=a, max=b)


def test_the_random_stream_fills_the_convs_in_the_release_order():
    # The release registers a block's layers as norm1, attn (qkvo, lepe, proj), norm2,
    # ffn (fc1, fc2, dwconv), pos, and fills its convs in that order while it builds them:
    # built and initialised right after seeding, both give bit for bit the same weights.
    block = RAVLT(TINY_ARCH).layers[0].blocks[0]
    names = {m: n for n, m in block.named_modules()}
    order = [names[m] for m in modules_in_release_order(block)
             if isinstance(m, (nn.Conv2d, nn.LayerNorm))]
    assert order == ['norm1.norm', 'attn.qkvo', 'attn.lepe', 'attn.proj', 'norm2.norm',
                     'ffn.fc1', 'ffn.fc2', 'ffn.dwconv', 'pos']
    assert {m for m in modules_in_release_order(block)} == set(block.modules())

    torch.manual_seed(7)
    model = RAVLT('t')
    model.init_weights()
    convs = [m for m in modules_in_release_order(model) if isinstance(m, nn.Conv2d)]
    torch.manual_seed(7)  # building drew one uniform value per conv weight and bias (PyTorch's)
    torch.empty(sum(p.numel() for m in convs for p in m.parameters())).uniform_()
    for m in convs:
        assert torch.equal(m.weight, timm_trunc_normal_(torch.empty_like(m.weight), STD))


def test_a_parent_module_initialises_the_backbone_once():
    class Detector(BaseModule):
        def __init__(self):
            super().__init__()
            self.backbone = RAVLT(SMALL)

    detector = Detector()
    detector.init_weights()
    assert detector.backbone.is_init
    assert release_init_violations(detector.backbone) == []


def test_pretrained_weights_are_loaded_not_reinitialised(tmp_path):
    source = randomised(RAVLT(TINY_ARCH))
    torch.save({'state_dict': source.state_dict()}, tmp_path / 'own.pth')
    model = pretrained(tmp_path / 'own.pth')
    with mock.patch.object(ravlt.RAVLT, 'init_from_scratch') as scratch:
        model.init_weights()
    assert scratch.call_count == 0
    loaded, expected = model.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_other_init_cfgs_go_to_mmengine():
    model = RAVLT(TINY_ARCH, init_cfg=dict(type='Constant', layer='Conv2d', val=0.5, bias=0.))
    with mock.patch.object(ravlt.RAVLT, 'init_from_scratch') as scratch:
        model.init_weights()
    assert scratch.call_count == 0
    assert torch.all(model.patch_embed.proj[0].weight == 0.5)
