"""RAVLT's CPU inference in bands of rows: the same outputs as the whole-map fast path and the
reference path, whatever the band height; used only where no gradient is recorded."""
import pytest
import torch

from ravlt_dense.models.backbones import ravlt
from ravlt_dense.models.backbones.ravlt import RAVLT, RAVLTBlock

from conftest import TINY_ARCH as TINY

MIXES = [('rala', 'rala', 'softmax', 'softmax'), ('rala', ) * 4]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomised(model: RAVLT) -> RAVLT:
    """Layer scales and BatchNorm statistics away from their initial 1 / 0, so that a step
    that skipped one of them would show."""
    for m in model.modules():
        if isinstance(m, RAVLTBlock):
            m.gamma_1.data.uniform_(0.5, 1.5)
            m.gamma_2.data.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.)
    return model.eval()


def count_banded_blocks(monkeypatch) -> list:
    calls = []
    original = RAVLTBlock.forward_into

    def spy(self, *args):
        calls.append(self)
        return original(self, *args)

    monkeypatch.setattr(RAVLTBlock, 'forward_into', spy)
    return calls


@pytest.mark.parametrize('attn_types', MIXES)
@pytest.mark.parametrize('band_bytes', [1, 20_000, 1 << 30])  # one row, a few, the whole map
def test_bands_give_the_whole_map_outputs(attn_types, band_bytes, monkeypatch):
    model = randomised(RAVLT(TINY, attn_types=attn_types))
    x = torch.randn(2, 3, 90, 70)  # odd sizes: the last band is shorter, maps are not square
    with torch.enable_grad():  # gradients wanted: the whole-map fast path
        whole = model(x)
    with torch.no_grad():
        reference = model.set_attn_impl('reference')(x)
        model.set_attn_impl('fast')
    monkeypatch.setattr(ravlt, 'BAND_BYTES', band_bytes)
    calls = count_banded_blocks(monkeypatch)
    kept = x.clone()
    with torch.inference_mode():
        banded = model(x)
    assert len(calls) == 2 * sum(TINY['depths'])  # every block of both images, in bands
    assert torch.equal(x, kept)
    for a, b, c in zip(banded, whole, reference):
        assert a.shape == b.shape and a.is_contiguous()
        assert (a - b).abs().max() <= 2e-5
        assert (a - c).abs().max() <= 2e-5


def test_bands_only_where_no_gradient_is_recorded(monkeypatch):
    model = randomised(RAVLT(TINY))
    x = torch.randn(1, 3, 64, 64)
    calls = count_banded_blocks(monkeypatch)
    model(x)  # eval mode, but the parameters want gradients
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(x)
    with torch.no_grad():
        model.set_attn_impl('reference')(x)
        model.set_attn_impl('fast').train()(x)  # drop path and BN statistics in training
    assert not calls
    model.eval().requires_grad_(False)
    model(x)  # a frozen backbone: nothing to record
    assert len(calls) == sum(TINY['depths'])


def test_hooked_modules_run_whole_and_their_hooks_see_the_maps(monkeypatch):
    model = randomised(RAVLT(TINY))
    x = torch.randn(1, 3, 64, 64)
    seen = {}
    stem_conv = model.patch_embed.proj[0]

    def keep(name, value):
        seen[name] = value  # (a hook that returns a value replaces the output)

    handles = [
        model.layers[1].blocks[0].attn.register_forward_hook(
            lambda m, args, out: keep('attn', args[0].shape)),
        # the bands would run the BN after this conv in place, over the map the hook kept
        stem_conv.register_forward_hook(lambda m, args, out: keep('stem', out))
    ]
    calls = count_banded_blocks(monkeypatch)
    with torch.no_grad():
        hooked = model(x)
        for h in handles:
            h.remove()
        expected_stem = stem_conv(x)
        banded = model(x)
    assert seen['attn'] == (1, TINY['embed_dims'][1], 8, 8)
    assert (seen['stem'] - expected_stem).abs().max() <= 1e-5  # (conv order of sums differs)
    # stage 1 ran whole while hooked; the other stages, and every stage unhooked, in bands
    assert len(calls) == 2 * sum(TINY['depths']) - TINY['depths'][1]
    for a, b in zip(hooked, banded):
        assert (a - b).abs().max() <= 2e-5


def test_a_hook_on_a_stage_itself_keeps_its_bands(monkeypatch):
    """A stage's own hooks (a timer's) see its input and output, banded or not."""
    model = randomised(RAVLT(TINY))
    seen = []
    model.layers[2].register_forward_hook(lambda m, args, out: seen.append(out[0].shape))
    calls = count_banded_blocks(monkeypatch)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen == [(1, TINY['embed_dims'][2], 4, 4)]
    assert len(calls) == sum(TINY['depths'])
