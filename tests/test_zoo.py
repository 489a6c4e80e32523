"""The model zoo: configs/metafile.yml agrees with the configs and configs/README.md (the README
pages' links resolve), and a zoo name runs the demos end to end on the authors' checkpoint
formats (served by a loopback server).

The parameter counts of the metafile are checked against every built model in
test_configs/test_det_configs.py and test_seg_configs.py (test_config_builds_with_paper_params,
test_ade20k_config_param_count), which build them anyway.
"""
import json
import os.path as osp
import re
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from ravlt_dense import zoo
from ravlt_dense.models import RAVLT, build_model
from ravlt_dense.tools.names import resolve_model

from conftest import REPO, load_script

HF = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/'


def release_file(name):
    """The authors' file name of a config (their B is "b" in file names, "m" in configs)."""
    algorithm, variant = name.split('_')[0], zoo.variant(name)
    assert name.startswith(f'{algorithm}_ravlt-{variant}_')
    three_x = name.endswith('_amp-ms-crop-3x_coco')
    return {'mask-rcnn': f'maskrcnn_{variant}_{"3x_36" if three_x else "1x_12"}_epoch.pth',
            'retinanet': f'retinanet_{variant}_1x_12_epoch.pth',
            'cascade-mask-rcnn': f'Casmaskrcnn_{variant}_3x_36_epoch.pth',
            'fpn': f'fpn_{variant}_1x.pth', 'upernet': f'uper_{variant}_2x.pth'}[algorithm]


# The zoo's configs by head, in mmdet's and mmseg's folders: the collection of the metafile ->
# its folder of configs/. The query-based heads' configs are configs only: no trained weights
# of them exist.
FOLDERS = {'Mask R-CNN': 'mask_rcnn', 'RetinaNet': 'retinanet',
           'Cascade Mask R-CNN': 'cascade_rcnn', 'Semantic FPN': 'sem_fpn', 'UperNet': 'upernet',
           'DINO': 'dino', 'Mask2Former': 'mask2former'}
CONFIG_ONLY_FOLDERS = ('dino', 'mask2former')


def test_metafile_lists_every_config_with_the_authors_weights():
    names = zoo.config_names()
    configs = [p.stem for folder in set(FOLDERS.values()) - set(CONFIG_ONLY_FOLDERS)
               for p in (REPO / 'configs' / folder).glob('*.py')]
    config_only = [p.stem for folder in CONFIG_ONLY_FOLDERS
                   for p in (REPO / 'configs' / folder).glob('*.py')]
    assert sorted(names) == sorted(configs + config_only)
    assert len(configs) == 21 and len(config_only) == 9
    for name in names:  # each config in its head's folder, named as its model (mmdet's way)
        folder = FOLDERS[zoo.get(name)['In Collection']]
        assert zoo.get(name)['Config'] == f'configs/{folder}/{name}.py'
        assert (REPO / 'configs' / folder / f'{name}.py').is_file()
    with open(REPO / 'model-index.yml') as f:
        assert 'configs/metafile.yml' in f.read()
    collections = {c['Name'] for c in Config.fromfile(zoo.METAFILE)['Collections']}
    for name, model in zoo.models().items():
        assert model['In Collection'] in collections
        if name in config_only:
            # no weights, no paper figures, no results: only what we measured ourselves
            assert not zoo.has_weights(name) and 'Weights' not in model
            assert zoo.paper_figures(name) is None and not zoo.metrics(name)
            assert osp.isfile(zoo.config_path(name))
            assert model['Metadata']['Backbone'] == f'ravlt-{zoo.variant(name)}_in1k'
            ours = zoo.measured(name)
            assert ours['params'] > 0
            assert (ours['flops'] is None) == (ours['flops_traced'] is None)
            assert ours['flops'] is None or ours['flops'] < ours['flops_traced']
            with pytest.raises(ValueError, match='config without trained weights'):
                zoo.weights_url(name)
        elif name in names:
            assert zoo.has_weights(name)
            assert osp.isfile(zoo.config_path(name))
            assert model['Weights'] == HF + release_file(name)
            assert model['Metadata']['Backbone'] in zoo.models()
            assert set(zoo.metrics(name)) in ({'box AP'}, {'box AP', 'mask AP'}, {'mIoU'})
            assert abs(zoo.measured(name)['params'] / 1e6 - zoo.paper_figures(name)['params']) < 1
            # FLOPs counted as the paper does match it within 2G
            assert abs(zoo.measured(name)['flops'] - zoo.paper_figures(name)['flops']) < 2
        else:  # an ImageNet backbone, named in mmpretrain's style
            variant = zoo.variant(name)
            assert name == f'ravlt-{variant}_in1k'
            assert model['Weights'] == f'{HF}RAVLT_{variant.upper()}.pth'


@pytest.mark.parametrize('name', ['mask-rcnn_ravlt-b_fpn_amp-ms-crop-3x_coco',
                                  'upernet_ravlt-l_8xb2-amp-160k_ade20k-512x512',
                                  'retinanet_ravlt-t_fpn_amp-1x_coco'])
def test_config_backbone_starts_from_the_zoo_imagenet_weights(name):
    # every config: test_configs/test_*_configs.py; here the link through the metafile
    backbone = Config.fromfile(zoo.config_path(name)).model.backbone
    weights = zoo.get(name)['Metadata']['Backbone']
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=zoo.weights_url(weights))
    assert weights == f'ravlt-{backbone.arch}_in1k'


def test_zoo_readme_tables_are_the_metafile():
    # the results live beside the metafile (configs/README.md); the root README links them
    tables = load_script('tools/misc/zoo_tables.py')
    zoo_readme = REPO / 'configs' / 'README.md'
    generated = tables.tables()
    assert tables.generated_section(zoo_readme.read_text()) == generated, \
        'configs/README.md is out of date: python tools/misc/zoo_tables.py --update'
    for name in zoo.config_names():
        row = next(line for line in generated.splitlines() if line.startswith(f'| {name} |'))
        config = osp.relpath(zoo.config_path(name), zoo_readme.parent)
        assert f'[config]({config})' in row and (zoo_readme.parent / config).is_file()
        if zoo.has_weights(name):
            assert f'({zoo.get(name)["Weights"]})' in row
        else:
            assert row.endswith('| none: no trained weights exist |')
        assert f'{zoo.measured(name)["params"] / 1e6:.2f}M' in row
        assert all(f' {v} |' in row for v in zoo.metrics(name).values())
    assert '(configs/README.md)' in (REPO / 'README.md').read_text()
    with pytest.raises(ValueError, match='has no model-zoo section'):
        tables.generated_section('# a README without the markers')


def _anchors(markdown):
    """GitHub's anchors of the headings of a Markdown text (code blocks left out)."""
    text = re.sub(r'```.*?```', '', markdown, flags=re.S)
    return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-')
            for h in re.findall(r'^#+\s+(.*)$', text, re.M)}


@pytest.mark.parametrize('page', ['README.md', 'configs/README.md', 'docs/*.md'])
def test_relative_links_of_the_readmes_and_docs_resolve(page):
    broken = []
    for path in sorted(REPO.glob(page)):
        text = re.sub(r'```.*?```', '', path.read_text(), flags=re.S)
        for link in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', link):  # http(s), mailto: not checked offline
                continue
            target, _, anchor = link.partition('#')
            file = path.parent / target if target else path
            if not file.exists() or anchor and anchor not in _anchors(file.read_text()):
                broken.append(f'{path.relative_to(REPO)}: {link}')
    assert not broken, f'links that lead nowhere: {broken}'


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match=r"Unknown model 'mask-rcnn_ravlt-x_fpn_amp-1x_coco': the "
                       r'model zoo \(.*metafile\.yml\) has ravlt-t_in1k, .*'
                       r'upernet_ravlt-l_8xb2-amp-160k_ade20k-512x512'):
        zoo.get('mask-rcnn_ravlt-x_fpn_amp-1x_coco')
    with pytest.raises(ValueError, match="'ravlt-s_in1k' of the zoo has no config"):
        zoo.config_path('ravlt-s_in1k')
    with pytest.raises(ValueError, match="'ravlt_s_in1k' of the zoo has no config"):
        zoo.config_path('ravlt_s_in1k')  # an old name: the same error, and a warning
    assert zoo.name_of_config('configs/quickstart/fpn_ravlt-t_1xb8-200it_ade-shapes-64x64.py') \
        is None


def test_variants_are_the_arch_zoo_and_every_model_names_one():
    assert zoo.variants() == ['t', 's', 'b', 'l']
    # the backbone's architectures, each under its first name (aliases: 'tiny', 'm', ...)
    archs = []
    for name, arch in RAVLT.arch_zoo.items():
        if arch not in [RAVLT.arch_zoo[a] for a in archs]:
            archs.append(name)
    assert archs == zoo.variants()
    for name in zoo.models():
        assert zoo.variant(name) in zoo.variants()
    assert zoo.variant('cascade-mask-rcnn_ravlt-b_fpn_amp-ms-crop-3x_coco') == 'b'


def test_url_root_override(monkeypatch):
    monkeypatch.delenv(zoo.URL_ROOT_ENV, raising=False)
    upernet = 'upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512'
    assert zoo.weights_url(upernet) == HF + 'uper_s_2x.pth'
    monkeypatch.setenv(zoo.URL_ROOT_ENV, 'http://mirror.local/ravlt/')
    assert zoo.weights_url(upernet) == 'http://mirror.local/ravlt/uper_s_2x.pth'
    named = resolve_model('mask-rcnn_ravlt-s_fpn_amp-1x_coco')
    assert named.config == str(REPO / 'configs/mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py')
    assert named.weights == 'http://mirror.local/ravlt/maskrcnn_s_1x_12_epoch.pth'
    assert resolve_model('mask-rcnn_ravlt-s_fpn_amp-1x_coco', 'mine.pth').weights == 'mine.pth'


# --------------------------------------------------------------------------------------------
# Zoo names end to end: a test metafile whose models are the quick-start ones, their weights
# in the authors' formats on the loopback server, reached through RAVLT_ZOO_URL_ROOT.
# --------------------------------------------------------------------------------------------
DET_QUICK = 'mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes'
SEG_QUICK = 'fpn_ravlt-t_1xb8-200it_ade-shapes-64x64'


@pytest.fixture
def tiny_zoo(tmp_path, file_server, torch_home, monkeypatch):
    metafile = tmp_path / 'metafile.yml'
    entries = []
    for name, weights in ((DET_QUICK, 'maskrcnn_t_shapes.pth'), (SEG_QUICK, 'fpn_t_shapes.pth')):
        entries.append(f'  - Name: {name}\n    In Collection: RAVLT\n'
                       f'    Config: {REPO / "configs" / "quickstart" / name}.py\n'
                       f'    Weights: {zoo.URL_ROOT}/{weights}\n')
    metafile.write_text('Models:\n' + ''.join(entries))
    monkeypatch.setattr(zoo, 'METAFILE', str(metafile))
    monkeypatch.setenv(zoo.URL_ROOT_ENV, file_server.url)
    photo = tmp_path / 'photo.png'
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photo), rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    return dict(server=file_server, photo=photo, cache=torch_home, out=tmp_path / 'out')


def serve_release(server, config, file, meta):
    """Random weights of ``config``'s model as the authors' framework saved them."""
    cfg = Config.fromfile(REPO / 'configs' / 'quickstart' / config)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.save(dict(state_dict=model.state_dict(), meta=meta), server.root / file)
    return model


def test_image_demo_runs_a_zoo_name(tiny_zoo):
    # an mmdet 2.x file without class names: they come from the config's dataset
    serve_release(tiny_zoo['server'], f'{DET_QUICK}.py', 'maskrcnn_t_shapes.pth',
                  dict(epoch=12, mmdet_version='2.25.0'))
    demo = load_script('demo/image_demo.py')
    with mock.patch.object(zoo, 'config_path', wraps=zoo.config_path) as config_path:
        demo.main([DET_QUICK, str(tiny_zoo['photo']), '--out-dir',
                   str(tiny_zoo['out']), '--pred-score-thr', '0'])
    # the name is read once; the inferencer is given the config file it named
    assert [c.args[0] for c in config_path.call_args_list] == [DET_QUICK]
    pred = json.loads((tiny_zoo['out'] / 'preds' / 'photo.json').read_text())
    assert pred['classes'] == ['circle', 'square', 'triangle', 'star']
    assert pred['instances'] and pred['instances'][0]['class_name'] in pred['classes']
    vis = cv2.imread(str(tiny_zoo['out'] / 'vis' / 'photo.png'))
    assert vis.shape == (64, 80, 3)
    assert (tiny_zoo['cache'] / 'maskrcnn_t_shapes.pth').is_file()  # downloaded once, cached


def test_seg_demo_runs_a_zoo_name_with_the_release_classes(tiny_zoo):
    classes = ('bg', 'fg', 'c', 'd', 'e')
    palette = [[i * 40, 0, 255 - i * 40] for i in range(5)]
    source = serve_release(tiny_zoo['server'], f'{SEG_QUICK}.py', 'fpn_t_shapes.pth',
                           dict(CLASSES=classes, PALETTE=palette, iter=80000))
    demo = load_script('demo/seg_demo.py')
    written = demo.main([SEG_QUICK, str(tiny_zoo['photo']), '--out-dir',
                         str(tiny_zoo['out']), '--device', 'cpu'])
    label = cv2.imread(written[0]['pred'], cv2.IMREAD_UNCHANGED)
    assert label.shape == (64, 80) and label.max() < 5
    # the model and its drawings carry the checkpoint's weights and classes
    named = resolve_model(SEG_QUICK)
    inferencer = demo.build_inferencer(demo.load_config(named.config), named.weights, 'cpu')
    assert tuple(inferencer.visualizer.dataset_meta['classes']) == classes
    assert inferencer.visualizer.dataset_meta['palette'] == palette
    state = inferencer.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in source.state_dict().items())
