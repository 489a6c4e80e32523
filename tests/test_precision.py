"""ravlt_dense.tools.precision: the zoo's fp16 configs train in fp32 on a machine without a GPU,
saying so once, and keep their AMP as written on a machine with one."""
import warnings
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

from ravlt_dense.tools.precision import fit_optim_wrapper_to_device

from conftest import QUICKSTART, REPO, TINY_ARCH

DET = REPO / 'configs' / 'mask_rcnn' / 'mask-rcnn_ravlt-s_fpn_amp-1x_coco.py'
SEG = REPO / 'configs' / 'upernet' / 'upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py'

pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_model(cfg):
    """The config's model with a tiny RAVLT (no pretrained download), slim seg heads and few
    RoIs."""
    dims = TINY_ARCH['embed_dims']
    cfg.model.backbone.update(arch=TINY_ARCH, init_cfg=None)
    if cfg.model.type == 'MaskRCNN':
        cfg.model.neck.in_channels = dims
        # few RoIs: a 64 px batch needs no 1000 proposals and 512 samples
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=100, max_per_img=50)
        cfg.model.train_cfg.rcnn.sampler.num = 32
    else:
        cfg.model.data_preprocessor.size = (64, 64)
        cfg.model.decode_head.update(in_channels=dims, channels=16)
        cfg.model.auxiliary_head.update(in_channels=dims[2], channels=16)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def batch(cfg):
    """Two 64x64 training samples with ground truth of the config's task."""
    if cfg.model.type == 'MaskRCNN':
        from mmdet.testing import demo_mm_inputs
        return demo_mm_inputs(2, (3, 64, 64), num_items=[3, 2], num_classes=80, with_mask=True)
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
        samples.append(sample)
    return dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)] * 2,
                data_samples=samples)


@pytest.mark.parametrize('config, dropped', [(DET, ''), (SEG, ', loss_scale=512.0')])
def test_fp16_config_trains_in_fp32_without_a_gpu(config, dropped):
    cfg = Config.fromfile(config)
    model = tiny_model(cfg)
    with mock.patch('torch.cuda.is_available', return_value=False):
        # as written, mmengine refuses it here
        with pytest.raises(AssertionError, match='only available training on gpu'):
            build_optim_wrapper(model, cfg.optim_wrapper)
        optimizer = cfg.optim_wrapper.optimizer.copy()
        with pytest.warns(UserWarning) as record:
            assert fit_optim_wrapper_to_device(cfg)
    assert [str(w.message) for w in record] == [
        'No GPU found: training in fp32 with optim_wrapper.type=OptimWrapper instead of the '
        f"config's AmpOptimWrapper (mixed precision{dropped} dropped). On a GPU the config "
        'trains with AMP as written.']
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.optimizer == optimizer  # the recipe itself is kept
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0

    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    losses = model.train_step(batch(cfg), wrapper)
    assert losses and all(torch.isfinite(v).all() for v in losses.values())
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # it took a step


@pytest.mark.parametrize('config', [DET, SEG])
def test_fp16_config_keeps_amp_on_a_gpu(config):
    cfg = Config.fromfile(config)
    written = cfg.optim_wrapper.to_dict()
    with mock.patch('torch.cuda.is_available', return_value=True), \
            warnings.catch_warnings():
        warnings.simplefilter('error')  # no warning at all
        assert not fit_optim_wrapper_to_device(cfg)
    assert cfg.optim_wrapper.to_dict() == written
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


def test_fp32_config_is_left_alone():
    cfg = Config.fromfile(REPO / QUICKSTART)
    written = cfg.optim_wrapper.to_dict()
    with mock.patch('torch.cuda.is_available', return_value=False), \
            warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not fit_optim_wrapper_to_device(cfg)
    assert cfg.optim_wrapper.to_dict() == written
