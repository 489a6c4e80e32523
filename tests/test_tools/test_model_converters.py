"""tools/model_converters/ravlt_release_to_mm.py: converts the authors' files after checking
every key, and writes nothing when one does not fit."""
import torch

from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import randomised, release_detection_checkpoint, run_tool


def run_converter(*args):
    return run_tool(['tools/model_converters/ravlt_release_to_mm.py', *args], check=False)


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
