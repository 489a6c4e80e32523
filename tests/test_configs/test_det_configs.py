"""The detection configs of the model zoo: the paper's models and recipes, exactly."""
import pytest
from mmengine.config import Config

from ravlt_dense import zoo
from ravlt_dense.models import build_model
from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import REPO

# The detector type of each collection of the metafile.
DETECTORS = {'Mask R-CNN': 'MaskRCNN', 'RetinaNet': 'RetinaNet',
             'Cascade Mask R-CNN': 'CascadeRCNN'}
# (the configs without trained weights: test_query_head_configs.py)
DET_CONFIGS = [name for name in zoo.config_names()
               if zoo.get(name)['Metadata']['Training Data'] == 'COCO' and zoo.has_weights(name)]


def test_every_detection_collection_has_a_detector_type():
    assert DET_CONFIGS
    assert {zoo.get(name)['In Collection'] for name in DET_CONFIGS} == set(DETECTORS)


@pytest.mark.parametrize('name', DET_CONFIGS)
def test_config_builds_with_paper_params(name):
    detector = DETECTORS[zoo.get(name)['In Collection']]
    variant = zoo.variant(name)
    schedule = {12: '1x', 36: '3x'}[zoo.get(name)['Metadata']['Epochs']]
    cfg = Config.fromfile(zoo.config_path(name))
    model_cfg = cfg.model
    assert model_cfg.type == detector
    backbone = model_cfg.backbone
    assert backbone.type == 'RAVLT' and backbone.arch == variant
    assert backbone.drop_path_rate == RAVLT.arch_zoo[variant]['drop_path_rate']
    assert backbone.norm_eval is True
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=zoo.weights_url(f'ravlt-{variant}_in1k'))
    dims = RAVLT.arch_zoo[variant]['embed_dims']
    assert model_cfg.neck.in_channels == [dims[i] for i in backbone.out_indices]
    assert 'SyncBN' not in cfg.pretty_text
    # the recipe
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                               weight_decay=0.05)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0
    assert cfg.auto_scale_lr.base_batch_size == 16 and cfg.train_dataloader.batch_size == 2
    steps = next(s for s in cfg.param_scheduler if s.type == 'MultiStepLR')
    epochs, milestones = (12, [8, 11]) if schedule == '1x' else (36, [27, 33])
    assert cfg.train_cfg.max_epochs == epochs and steps.milestones == milestones
    if schedule == '3x':  # multi-scale training, short side 480..800
        choice = next(t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoice')
        scales = [min(s) for s in choice.transforms[0][0].scales]
        assert scales[0] == 480 and scales[-1] == 800
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'

    if name.startswith('mask-rcnn_') and schedule == '3x':  # the 1x model, trained longer
        one_x_name = f'mask-rcnn_ravlt-{variant}_fpn_amp-1x_coco'
        one_x = Config.fromfile(zoo.config_path(one_x_name))
        assert cfg.model == one_x.model
        assert zoo.measured(name) == zoo.measured(one_x_name)
        return
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    assert params == zoo.measured(name)['params']  # the README's figure
    params /= 1e6
    paper = zoo.paper_figures(name)['params']
    assert abs(params - paper) < 1.0, f'{name}: {params:.2f}M, paper {paper}M'


def test_optimizer_skips_decay_on_norms_only():
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(REPO / 'configs/mask_rcnn/mask-rcnn_ravlt-t_fpn_amp-1x_coco.py')
    model = build_model(cfg)
    cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs a GPU
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {id(p): g['weight_decay'] for g in optimizer.param_groups for p in g['params']}
    names = dict(model.named_parameters())
    for name in ('backbone.layers.0.blocks.0.norm1.norm.weight', 'backbone.extra_norms.3.norm.bias',
                 'backbone.patch_embed.proj.1.weight', 'backbone.layers.1.downsample.norm.weight'):
        assert decay[id(names[name])] == 0, name
    # the release's recipe exempts norms only: layer scale decays like any weight
    for name in ('backbone.layers.0.blocks.0.attn.qkvo.weight', 'neck.fpn_convs.0.conv.weight',
                 'backbone.layers.0.blocks.0.gamma_1', 'backbone.layers.2.blocks.5.gamma_2'):
        assert decay[id(names[name])] == 0.05, name
    # the RoPE frequencies are a buffer: never optimised
    assert 'backbone.layers.0.RoPE.angle' not in names
