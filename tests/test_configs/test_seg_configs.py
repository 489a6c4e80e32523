"""The segmentation configs: the zoo's ADE20K models and recipes, and the quick-start models
on the generated shapes set."""
import pytest
import torch
from mmengine.config import Config

from ravlt_dense import zoo
from ravlt_dense.models import build_model

from conftest import REPO

CONFIGS = REPO / 'configs'
FPN_QUICK = CONFIGS / 'quickstart' / 'fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py'
UPER_QUICK = CONFIGS / 'quickstart' / 'upernet_ravlt-t_1xb8-200it_ade-shapes-64x64.py'

# The ADE20K models of the zoo (configs/metafile.yml), by name (= their config's file name).
# (the configs without trained weights: test_query_head_configs.py)
ADE20K_CONFIGS = sorted(name for name in zoo.config_names()
                        if zoo.get(name)['Metadata']['Training Data'] == 'ADE20K'
                        and zoo.has_weights(name))


def _walk(node):
    """Every dict in a (nested) config."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)


def test_every_ade20k_config_is_in_the_zoo():
    assert len(ADE20K_CONFIGS) == 7
    assert sorted(p.stem for folder in ('upernet', 'sem_fpn')
                  for p in (CONFIGS / folder).glob('*.py')) == ADE20K_CONFIGS


@pytest.mark.parametrize('name', ADE20K_CONFIGS)
def test_ade20k_config_param_count(name):
    cfg = Config.fromfile(zoo.config_path(name))
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert params == zoo.measured(name)['params']  # the README's figure
    params /= 1e6
    paper = zoo.paper_figures(name)['params']
    assert abs(params - paper) < 1.0, f'{name}: {params:.2f}M, paper {paper}M'
    variant = zoo.variant(name)
    assert cfg.model.backbone.arch == variant
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=zoo.weights_url(f'ravlt-{variant}_in1k'))


@pytest.mark.parametrize('name', ADE20K_CONFIGS)
def test_ade20k_config_recipe(name):
    cfg = Config.fromfile(zoo.config_path(name))
    assert cfg.model.decode_head.num_classes == 150
    assert not [d for d in _walk(cfg._cfg_dict.to_dict()) if d.get('type') == 'SyncBN']
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    assert cfg.model.data_preprocessor.size == (512, 512)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        types = [t['type'] for t in loader.dataset.pipeline]
        # the labels are checked where they are loaded (LoadAnnotations replaced)
        assert 'LoadCheckedAnnotations' in types and 'LoadAnnotations' not in types
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomCrop'][0]
    assert crop['crop_size'] == (512, 512)
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper' and optim.optimizer.type == 'AdamW'
    if name.startswith('upernet'):
        assert optim.loss_scale == 512.
        assert optim.optimizer.lr == 6e-5 and optim.optimizer.weight_decay == 0.01
        assert optim.optimizer.betas == (0.9, 0.999)
        assert optim.paramwise_cfg.norm_decay_mult == 0.
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
        assert (poly.type, poly.power, poly.begin, poly.end) == ('PolyLR', 1.0, 1500, 160000)
        assert cfg.train_cfg.max_iters == 160000
    else:
        assert optim.optimizer.lr == 1e-4 and optim.optimizer.weight_decay == 1e-4
        assert [s.type for s in cfg.param_scheduler] == ['PolyLR']
        assert cfg.train_cfg.max_iters == 80000


def test_upernet_no_decay_on_every_norm():
    """norm_decay_mult reaches the stem's BNs and the output LayerNorms, not only '*norm*' names."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(CONFIGS / 'upernet' / 'upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512.py')
    model = build_model(cfg)
    optim_cfg = cfg.optim_wrapper.to_dict()
    optim_cfg['type'] = 'OptimWrapper'  # AMP needs a GPU; the parameter groups are the same
    optim_cfg.pop('loss_scale')
    wrapper = build_optim_wrapper(model, optim_cfg)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    named = dict(model.named_parameters())
    for key in ('backbone.patch_embed.proj.1.weight', 'backbone.extra_norms.0.norm.weight',
                'backbone.layers.0.blocks.0.norm1.norm.bias', 'decode_head.bottleneck.bn.weight'):
        assert decay[id(named[key])] == 0., key
    assert decay[id(named['backbone.layers.0.blocks.0.attn.qkvo.weight'])] == 0.01


def test_quickstart_configs_match_generator(ade_gen):
    for path in (FPN_QUICK, UPER_QUICK):
        cfg = Config.fromfile(path)
        assert cfg.model.decode_head.num_classes == len(ade_gen.CLASSES)
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            meta = loader.dataset.metainfo
            assert tuple(meta.classes) == ade_gen.CLASSES
            assert [tuple(c) for c in meta.palette] == [tuple(c) for c in ade_gen.PALETTE]
            assert loader.dataset.reduce_zero_label
            checks = [t for t in loader.dataset.pipeline if t['type'] == 'LoadCheckedAnnotations']
            assert checks[0]['num_classes'] == len(ade_gen.CLASSES)
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.val_evaluator.type == 'IoUMetric'
        assert cfg.model.backbone.arch == 't' and cfg.model.backbone.init_cfg is None


def test_upernet_quickstart_trains_one_step():
    """The UperNet quick-start model takes a training step on CPU (the FPN one runs end to end)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(UPER_QUICK)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)] * 2,
                data_samples=samples)
    losses = model.train_step(data, wrapper)
    assert set(losses) >= {'decode.loss_ce', 'aux.loss_ce'}
    assert all(torch.isfinite(v).all() for v in losses.values())
