"""Checkpoints in the release's formats load strictly, round-trip exactly, and fail clearly."""
import re

import numpy as np
import pytest
import torch

import ravlt_dense  # noqa: F401  registers the safe globals of our checkpoints
from ravlt_dense.checkpoint import infer_arch, to_backbone_state_dict
from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import (
    TINY_ARCH,
    pretrained,
    randomised,
    release_detection_checkpoint,
    release_imagenet_checkpoint,
)


def outputs(model, size=64):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, size, size))


def test_release_imagenet_checkpoint_loads_key_for_key(tmp_path):
    from mmengine.logging import MMLogger
    source = randomised(RAVLT(TINY_ARCH))
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
    source = randomised(RAVLT(TINY_ARCH))
    torch.save(release_detection_checkpoint(source), tmp_path / 'det.pth')
    model = pretrained(tmp_path / 'det.pth')
    model.init_weights()
    for a, b in zip(outputs(model), outputs(source)):
        assert torch.equal(a, b)


def test_own_checkpoint_round_trip_is_exact(tmp_path):
    from mmengine.runner.checkpoint import save_checkpoint
    source = randomised(RAVLT(TINY_ARCH, attn_types=('rala', ) * 4))
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
    state = RAVLT(TINY_ARCH).state_dict()
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
    assert infer_arch(RAVLT(arch).state_dict(), RAVLT.arch_zoo) == arch


def test_infer_arch_names_shapes_no_variant_has():
    with pytest.raises(ValueError, match=r'No RAVLT variant has embed_dims=\[8, 16, 32, 64\] and '
                       r'depths=\[1, 1, 2, 1\] \(known: t, tiny, s, small'):
        infer_arch(RAVLT(TINY_ARCH).state_dict(), RAVLT.arch_zoo)
    with pytest.raises(ValueError, match=r'Not a RAVLT backbone state dict: no layers\.0\.blocks'):
        infer_arch({'head.weight': torch.zeros(2)}, RAVLT.arch_zoo)


def test_mmengine_message_hub_unpickles_with_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    torch.save({'message_hub': {'log_scalars': {'loss': buffer}}, 'seed': np.int64(3),
                'shape': np.zeros(2)}, tmp_path / 'meta.pth')
    loaded = torch.load(tmp_path / 'meta.pth', weights_only=True)
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5


# --------------------------------------------------------------------------------------------
# The whole-model loader of tools/test.py, the demos and the export tool
# --------------------------------------------------------------------------------------------
class TwoLayers(torch.nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.backbone, self.head = torch.nn.Linear(2, width), torch.nn.Linear(width, 1)


def test_release_formats_are_converted_on_load(tmp_path):
    from ravlt_dense.checkpoint import load_model_checkpoint
    source = TwoLayers()
    # mmdet 2.x / mmseg 0.x: DDP prefix, classes and palette under their 0.x/2.x names
    release = dict(state_dict={f'module.{k}': v for k, v in source.state_dict().items()},
                   meta=dict(CLASSES=('a', 'b'), PALETTE=[(1, 2, 3), (4, 5, 6)], epoch=12))
    torch.save(release, tmp_path / 'release.pth')
    model = TwoLayers()
    loaded = load_model_checkpoint(model, str(tmp_path / 'release.pth'))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    assert loaded['meta'] == dict(dataset_meta=dict(classes=('a', 'b'),
                                                    palette=[[1, 2, 3], [4, 5, 6]]))
    assert sorted(loaded['state_dict']) == sorted(source.state_dict())


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path):
    from mmengine.logging import MMLogger

    from ravlt_dense.checkpoint import load_model_checkpoint
    source = TwoLayers(width=4)  # backbone and head of another width: only head.bias fits
    torch.save(dict(state_dict=source.state_dict()), tmp_path / 'other.pth')
    model = TwoLayers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r'(?s)other\.pth does not fit the net:\n3 mismatched '
                       r'key\(s\): backbone\.weight: checkpoint \(4, 2\) vs model \(3, 2\)'):
        load_model_checkpoint(model, str(tmp_path / 'other.pth'), what='the net')
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    MMLogger.get_instance(f'nonstrict-{tmp_path.name}', log_file=str(tmp_path / 'log.txt'))
    load_model_checkpoint(model, str(tmp_path / 'other.pth'), strict=False, what='the net')
    assert torch.equal(model.head.bias, source.head.bias)
    assert torch.equal(model.backbone.weight, before['backbone.weight'])
    log = (tmp_path / 'log.txt').read_text()
    assert 'does not fit the net; loading the keys that fit' in log
    assert 'head.weight: checkpoint (1, 4) vs model (1, 3)' in log


def test_zoo_names_resolve_to_their_weights_and_unknown_names_are_named():
    from ravlt_dense import zoo
    from ravlt_dense.checkpoint import find_checkpoint, load_model_checkpoint
    name = 'mask-rcnn_ravlt-s_fpn_amp-1x_coco'
    assert find_checkpoint(name) == zoo.weights_url(name)
    assert find_checkpoint('https://host/x.pth') == 'https://host/x.pth'
    assert find_checkpoint('mask-rcnn_ravlt-z_fpn_amp-1x_coco') is None
    with pytest.raises(FileNotFoundError, match=r'Checkpoint not found: nope\.pth \(neither a '
                       r'file, an http\(s\) URL nor a model of the zoo'):
        load_model_checkpoint(TwoLayers(), 'nope.pth')


# --------------------------------------------------------------------------------------------
# Both stacks: the fork's mmengine (onedl-mmengine 0.10.12) loads inside torch's safe_globals
# context, and retries a refused weights-only load with weights_only=False
# --------------------------------------------------------------------------------------------
def mmengine_fork_allowlist():
    """What onedl-mmengine 0.10.12's loader puts in ``torch.serialization.safe_globals``."""
    from mmengine.logging import HistoryBuffer
    core = np._core if hasattr(np, '_core') else np.core
    return [slice, getattr, core.multiarray._reconstruct, np.ndarray, np.dtype,
            core.multiarray.scalar, type(np.dtype(np.uint32)), type(np.dtype(np.float64)),
            type(np.dtype(np.int64)), HistoryBuffer]


def test_registrations_survive_the_fork_safe_globals_context(tmp_path):
    from mmengine.logging import HistoryBuffer

    from ravlt_dense.checkpoint import register_safe_globals
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    torch.save({'message_hub': {'log_scalars': {'loss': buffer}}, 'shape': np.zeros(2)},
               tmp_path / 'meta.pth')
    try:
        with torch.serialization.safe_globals(mmengine_fork_allowlist()):
            pass  # a load by the fork's mmengine; its exit removes these objects
        loaded = torch.load(tmp_path / 'meta.pth', weights_only=True)  # resume, a later load
        assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5
    finally:
        register_safe_globals()  # whatever happened, the next tests get the registrations


CODE_RAN = []


def record_run(what):
    CODE_RAN.append(what)


class CarriesCode:
    """Unpickling this runs code (here: a function that records that it ran)."""

    def __reduce__(self):
        return record_run, ('code ran', )


@pytest.fixture
def fork_local_loader():
    """mmengine's loader of local files as the fork's (onedl-mmengine 0.10.12) behaves: a
    refused weights-only load is retried with weights_only=False; restored afterwards."""
    import pickle

    from mmengine.runner.checkpoint import CheckpointLoader
    before = CheckpointLoader._get_checkpoint_loader('any.pth')

    def load_from_local(filename, map_location=None):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:  # the fork warns, then:
            return torch.load(filename, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    CODE_RAN.clear()
    yield
    CheckpointLoader.register_scheme(prefixes='', loader=before, force=True)


def test_code_carrying_files_are_refused_by_mmengine_on_either_stack(tmp_path,
                                                                     fork_local_loader):
    """What resume and load_from use (mmengine's CheckpointLoader) refuses a file carrying code
    once ravlt_dense is imported, even where mmengine itself would unpickle it."""
    import pickle

    from mmengine.runner.checkpoint import CheckpointLoader

    from ravlt_dense.checkpoint import register_checkpoint_loaders
    path = tmp_path / 'code.pth'
    torch.save(dict(state_dict={}, meta=dict(hook=CarriesCode())), path)
    CheckpointLoader.load_checkpoint(str(path))  # the fork's behaviour, as simulated
    assert CODE_RAN == ['code ran']
    CODE_RAN.clear()
    register_checkpoint_loaders()  # what `import ravlt_dense` does, after mmengine's own
    with pytest.raises(pickle.UnpicklingError, match=rf'(?s){re.escape(str(path))} holds Python '
                       r'objects that torch will not unpickle safely.*in this whole process.*'
                       r'add_safe_globals') as refused:
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert 'ravlt_release_to_mm' not in str(refused.value)  # not a RAVLT file
    assert CODE_RAN == []
    # a file of RAVLT weights (the release's or ours) that carries code: the converter
    torch.save(dict(state_dict={'backbone.layers.0.RoPE.angle': torch.ones(2)},
                    meta=dict(hook=CarriesCode())), tmp_path / 'ravlt.pth')
    with pytest.raises(pickle.UnpicklingError, match=r'(?s)will not unpickle safely.*convert it '
                       r'once with tools/model_converters/ravlt_release_to_mm\.py .*--unsafe-load'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'ravlt.pth'), map_location='cpu')
    assert CODE_RAN == []
    # and files of plain data load as before, through the same loader
    torch.save(dict(state_dict=dict(w=torch.ones(2)), meta=dict(epoch=np.int64(3))),
               tmp_path / 'data.pth')
    loaded = CheckpointLoader.load_checkpoint(str(tmp_path / 'data.pth'), map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2)) and loaded['meta']['epoch'] == 3
