"""Checkpoints in the release's formats load strictly, round-trip exactly, and fail clearly."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ravlt_dense
from ravlt_dense.checkpoint import infer_arch, to_backbone_state_dict
from ravlt_dense.models.backbones.ravlt import RAVLT

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
            mlp_ratio=3.5, layer_scale_init=[1., 1., 1., 1.])


def randomised(model):
    """A model whose every tensor differs from a fresh initialisation."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('running_var'):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point() and not name.endswith('RoPE.angle'):
                tensor.copy_(torch.randn_like(tensor) * 0.1)
    return model.eval()


def release_imagenet_checkpoint(model):
    """The layout of the authors' classification files: {'model': ...} with the head."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('extra_norms.')}
    c = model.embed_dims[-1]
    state.update({'proj.weight': torch.randn(1024, c, 1, 1), 'proj.bias': torch.randn(1024),
                  'norm.weight': torch.ones(1024), 'norm.bias': torch.zeros(1024),
                  'norm.running_mean': torch.zeros(1024), 'norm.running_var': torch.ones(1024),
                  'norm.num_batches_tracked': torch.tensor(0),
                  'head.weight': torch.randn(1000, 1024), 'head.bias': torch.randn(1000)})
    return {'model': state}


def release_detection_checkpoint(model):
    """The layout of the authors' mmdet 2.x files: backbone. prefixes, heads, meta."""
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(256, model.embed_dims[0], 1, 1)
    return {'state_dict': state, 'meta': {'CLASSES': ('a', 'b'), 'epoch': 12}}


def pretrained(path, arch=TINY, **kwargs):
    return RAVLT(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)


def outputs(model, size=64):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, size, size))


def test_release_imagenet_checkpoint_loads_key_for_key(tmp_path):
    from mmengine.logging import MMLogger
    source = randomised(RAVLT(TINY))
    torch.save(release_imagenet_checkpoint(source), tmp_path / 'in1k.pth')
    model = pretrained(tmp_path / 'in1k.pth')
    # the newest MMLogger is the 'current' one that the loader logs to
    MMLogger.get_instance(f'ckpt-{tmp_path.name}', log_file=str(tmp_path / 'log.txt'))
    model.init_weights()
    loaded, expected = model.state_dict(), source.state_dict()
    backbone_keys = [k for k in expected if not k.startswith('extra_norms.')]
    assert all(torch.equal(loaded[k], expected[k]) for k in backbone_keys)
    # the output norms are new: they keep their initialisation (LayerNorm: ones and zeros)
    assert torch.equal(loaded['extra_norms.0.norm.weight'], torch.ones(8))
    log = (tmp_path / 'log.txt').read_text()
    assert 'left out 9 key(s)' in log and 'head, norm, proj' in log
    assert 'output-norm key(s) not in the checkpoint' in log


def test_release_detection_checkpoint_gives_identical_outputs(tmp_path):
    source = randomised(RAVLT(TINY))
    torch.save(release_detection_checkpoint(source), tmp_path / 'det.pth')
    model = pretrained(tmp_path / 'det.pth')
    model.init_weights()
    for a, b in zip(outputs(model), outputs(source)):
        assert torch.equal(a, b)


def test_own_checkpoint_round_trip_is_exact(tmp_path):
    from mmengine.runner.checkpoint import save_checkpoint
    source = randomised(RAVLT(TINY, attn_types=('rala', ) * 4))
    save_checkpoint({'state_dict': source.state_dict()}, str(tmp_path / 'own.pth'))
    model = pretrained(tmp_path / 'own.pth', attn_types=('rala', ) * 4)
    model.init_weights()
    assert model.state_dict().keys() == source.state_dict().keys()
    for a, b in zip(outputs(model), outputs(source)):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_variant_names_the_mismatched_keys(tmp_path):
    torch.save({'model': RAVLT('t').state_dict()}, tmp_path / 't.pth')
    with pytest.raises(ValueError, match=r'does not fit RAVLT[\s\S]*mismatched key\(s\): '
                       r'[\s\S]*layers\.2\.blocks\.0\.pos\.weight: checkpoint \(256, 1, 3, 3\) '
                       r'vs model \(320, 1, 3, 3\)'):
        pretrained(tmp_path / 't.pth', arch='s').init_weights()


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = RAVLT(TINY).state_dict()
    del state['layers.0.blocks.0.pos.weight']
    state['layers.0.blocks.0.extra.weight'] = torch.zeros(1)
    torch.save({'state_dict': state}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError) as err:
        pretrained(tmp_path / 'bad.pth').init_weights()
    message = str(err.value)
    assert '1 missing key(s): layers.0.blocks.0.pos.weight' in message
    assert '1 unexpected key(s): layers.0.blocks.0.extra.weight' in message


def test_missing_checkpoint_file_says_how_to_proceed(tmp_path):
    with pytest.raises(FileNotFoundError, match='RAVLT checkpoint not found: .*nowhere.pth.*'
                       'init_cfg=None'):
        pretrained(tmp_path / 'nowhere.pth').init_weights()


def test_prefix_selects_a_submodule_and_a_wrong_prefix_is_reported():
    state = {'backbone.a': torch.zeros(1), 'neck.b': torch.zeros(1)}
    kept, dropped = to_backbone_state_dict(state)
    assert list(kept) == ['a'] and dropped == ['neck.b']
    with pytest.raises(ValueError, match="No key starts with the prefix 'teacher.'"):
        to_backbone_state_dict(state, prefix='teacher')


def test_not_a_checkpoint_is_reported(tmp_path):
    torch.save({'epoch': 3, 'meta': {}}, tmp_path / 'odd.pth')
    with pytest.raises(ValueError, match="No state dict found in the checkpoint"):
        pretrained(tmp_path / 'odd.pth').init_weights()


@pytest.mark.parametrize('arch', ['t', 's'])
def test_infer_arch_from_shapes(arch):
    assert infer_arch(RAVLT(arch).state_dict()) == arch


def test_mmengine_message_hub_unpickles_with_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    torch.save({'message_hub': {'log_scalars': {'loss': buffer}}, 'seed': np.int64(3),
                'shape': np.zeros(2)}, tmp_path / 'meta.pth')
    loaded = torch.load(tmp_path / 'meta.pth', weights_only=True)
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5


def run_converter(*args):
    return subprocess.run([sys.executable, 'tools/model_converters/ravlt_release_to_mm.py',
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def test_converter_writes_a_loadable_checkpoint(tmp_path):
    source = randomised(RAVLT('t'))
    torch.save(release_detection_checkpoint(source), tmp_path / 'release.pth')
    result = run_converter(tmp_path / 'release.pth', tmp_path / 'out.pth')
    assert result.returncode == 0, result.stderr
    assert "all keys fit" in result.stdout and "RAVLT('t')" in result.stdout
    converted = torch.load(tmp_path / 'out.pth', weights_only=True)
    assert converted['meta']['dataset_meta'] == {'classes': ('a', 'b')}
    assert torch.equal(converted['state_dict']['backbone.layers.2.blocks.5.attn.qkvo.weight'],
                       source.state_dict()['layers.2.blocks.5.attn.qkvo.weight'])


def test_converter_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    state = release_detection_checkpoint(RAVLT('t'))
    state['state_dict']['backbone.layers.0.blocks.0.attn.proj.weight'] = torch.zeros(3, 64, 1, 1)
    torch.save(state, tmp_path / 'release.pth')
    result = run_converter(tmp_path / 'release.pth', tmp_path / 'out.pth')
    assert result.returncode == 1
    assert 'nothing written' in result.stderr
    assert 'layers.0.blocks.0.attn.proj.weight: checkpoint (3, 64, 1, 1) vs model (64, 64, 1, 1)' \
        in result.stderr
    assert not (tmp_path / 'out.pth').exists()
    missing = run_converter(tmp_path / 'absent.pth', tmp_path / 'out.pth')
    assert missing.returncode == 1
    assert missing.stderr.startswith('error: Checkpoint not found:')  # a message, no traceback
