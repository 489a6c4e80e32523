"""tools/analysis/get_flops.py: both counts of a whole model beside the zoo's figures, and
cascade mask heads counted like Mask R-CNN's."""
import pytest
import torch
from mmengine.config import Config

from ravlt_dense import zoo
from ravlt_dense.models import build_model
from ravlt_dense.models.backbones.ravlt import RAVLT

from conftest import load_script

get_flops = load_script('tools/analysis/get_flops.py')
RETINANET = 'configs/retinanet/retinanet_ravlt-t_fpn_amp-1x_coco.py'


def test_get_flops_counts_both_ways():
    result = get_flops.main([RETINANET, '--shape', '128', '160'])
    assert result['input_shape'] == [1, 3, 128, 160]
    paper = zoo.paper_figures('retinanet_ravlt-t_fpn_amp-1x_coco')
    assert abs(result['params'] / 1e6 - paper['params']) < 1
    assert result['paper'] == paper
    assert result['paper']['shape'] == [800, 1280]
    assert result['flops_traced'] > result['flops_modules_only'] > 0
    assert result['backbone_flops_traced'] > result['backbone_flops_modules_only'] > 0
    assert result['flops_traced_matmul'] > 0


def test_default_shape_is_the_metafile_input_size_h_w():
    """Without --shape the count is at the zoo's Input Size, in the same H W order."""
    mask_rcnn = 'mask-rcnn_ravlt-t_fpn_amp-1x_coco'
    for name in (mask_rcnn, 'upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512'):
        args = get_flops.parse_args([zoo.config_path(name)])
        assert args.shape == zoo.paper_figures(name)['shape']
    assert zoo.paper_figures(mask_rcnn)['shape'] == [800, 1280]  # H < W, as COCO
    outside_the_zoo = 'configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py'
    assert get_flops.parse_args([outside_the_zoo]).shape == [512, 2048]
    assert get_flops.parse_args([RETINANET, '--shape', '96']).shape == [96, 96]


def test_get_flops_runs_cascade_mask_heads_on_100_rois_like_mask_rcnn():
    cfg = Config.fromfile(
        'configs/cascade_rcnn/cascade-mask-rcnn_ravlt-s_fpn_amp-ms-crop-3x_coco.py')
    cfg.model.backbone.update(arch='t', init_cfg=None)
    cfg.model.neck.in_channels = RAVLT.arch_zoo['t']['embed_dims']
    model = build_model(cfg).eval()
    assert get_flops.cap_cascade_mask_rois(model)
    seen = {'bbox': [], 'mask': []}
    for kind in seen:
        for head in getattr(model.roi_head, f'{kind}_head'):
            head.register_forward_hook(
                lambda m, args, out, kind=kind: seen[kind].append(args[0].shape[0]))
    data = get_flops.dummy_batch(model, 'mmdet', 256, 256)
    with torch.no_grad():
        outs = model(data['inputs'], data['data_samples'], mode='tensor')
    assert len(seen['bbox']) == len(seen['mask']) == 3  # every stage ran
    assert min(seen['bbox']) > 100  # bbox stages refine all proposals
    assert seen['mask'] == [100, 100, 100]
    roi_outs = outs[-1]  # (cls_scores, bbox_preds, three mask predictions)
    assert len(roi_outs) == 5 and all(m.shape[0] == 100 for m in roi_outs[2:])
    # models without a cascade mask head are left as they are
    assert not get_flops.cap_cascade_mask_rois(RAVLT('t'))


def test_get_flops_counts_mask2former_of_mmdet_and_mmseg():
    """Mask2Former's head needs the data samples in the tensor forward: mmdet's detector passes
    them, mmseg's EncoderDecoder does not, so TensorForward binds them to its decode head."""
    counts = {}
    for task in ('lsj-50e_coco', '160k_ade20k-512x512'):
        result = get_flops.main([f'configs/mask2former/mask2former_ravlt-t_8xb2-{task}.py',
                                 '--shape', '64', '64', '--json'])
        assert result['input_shape'] == [1, 3, 64, 64]
        assert result['flops_traced'] > result['flops_modules_only'] > 0
        # the pixel decoder and transformer decoder are counted, not the backbone alone
        assert result['flops_modules_only'] > 2 * result['backbone_flops_modules_only']
        counts[task] = result
    # the same network under both scopes (their class counts differ: 80 + 53 things/stuff vs 150)
    coco, ade = counts.values()
    assert abs(coco['params'] - ade['params']) < 0.1e6
    assert abs(coco['flops_modules_only'] / ade['flops_modules_only'] - 1) < 0.05


def test_get_flops_takes_openmmlab_config_names(capsys):
    """The same head on Swin-T, straight from mmdet's own config (as ``_base_`` names it)."""
    name = 'mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py'
    swin = get_flops.main([name, '--shape', '64', '64', '--json'])
    ravlt = get_flops.main(['mask2former_ravlt-t_8xb2-lsj-50e_coco', '--shape', '64', '64',
                            '--json'])  # a zoo name
    # Swin-T (27.5M, its four output norms included) and RAVLT-T under the same 80-class head
    assert 27.4e6 < swin['backbone_params'] < 27.6e6
    assert ravlt['backbone_params'] == sum(p.numel() for p in RAVLT('t').parameters())
    head = swin['params'] - swin['backbone_params']
    assert 0.9 < head / (ravlt['params'] - ravlt['backbone_params']) < 1.1
    capsys.readouterr()
    for bad, message in (('mmdet::mask2former/no_such_config.py', "mmdet has no config "
                          "'mask2former/no_such_config.py'"),
                         ('mmnothing::a/b.py', "no installed package 'mmnothing'")):
        with pytest.raises(SystemExit):
            get_flops.main([bad])
        assert message in capsys.readouterr().err
