"""``import ravlt_dense`` makes ``type='RAVLT'`` build in both mmdet and mmseg (one registration
in mmengine's root registry, which both search as their parent)."""
import pytest
import torch
from mmengine.config import Config

import ravlt_dense
from ravlt_dense import RAVLT


def test_registered_once_in_the_root_registry():
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    assert MODELS.get('RAVLT') is ravlt_dense.RAVLT
    assert 'RAVLT' not in DET_MODELS.module_dict and 'RAVLT' not in SEG_MODELS.module_dict
    assert DET_MODELS.get('RAVLT') is SEG_MODELS.get('RAVLT') is ravlt_dense.RAVLT


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_builds_through_each_registry(scope):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(dict(type='RAVLT', arch='t', out_indices=(2, 3), frozen_stages=1))
    assert isinstance(model, RAVLT)
    assert model.out_indices == (2, 3) and model.frozen_stages == 1
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [256, 512]


def test_config_with_custom_imports_builds_a_detector_backbone(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['ravlt_dense'], allow_failed_imports=False)\n"
        "backbone = dict(type='RAVLT', arch='small', attn_types=('rala',) * 4)\n")
    cfg = Config.fromfile(str(cfg_file))
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.backbone)
    assert model.attn_types == ('rala', ) * 4 and model.embed_dims[2] == 320
