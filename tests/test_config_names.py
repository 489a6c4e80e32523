"""Config and zoo names: every config of configs/ is named and foldered as mmdet 3.x and
mmseg 1.x name theirs, each name tells the truth about its config, and the names the zoo had
before (configs/renamed.yml) still resolve, with a warning naming the new one."""
import re
import subprocess
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

from ravlt_dense import zoo
from ravlt_dense.checkpoint import find_checkpoint
from ravlt_dense.models import RAVLT
from ravlt_dense.tools import cli, inference, names

from conftest import REPO, TINY_ARCH, pretrained, randomised, release_imagenet_checkpoint

CONFIGS = REPO / 'configs'
# The one file left under an old name: the README's first command used to train it.
KEPT = CONFIGS / 'maskrcnn_ravlt_s_coco.py'
# The head folders, as mmdet's and mmseg's configs/, and the algorithm part of their names.
HEADS = {'mask_rcnn': 'mask-rcnn', 'retinanet': 'retinanet', 'cascade_rcnn': 'cascade-mask-rcnn',
         'dino': 'dino-4scale', 'mask2former': 'mask2former', 'upernet': 'upernet',
         'sem_fpn': 'fpn'}
# mmdet names the neck of these (..._fpn_...) and leaves its default 8 GPUs x 2 images out
RCNN_STYLE = ('mask-rcnn', 'retinanet', 'cascade-mask-rcnn')
NAME = re.compile(
    r'(?P<algorithm>[a-z0-9]+(?:-[a-z0-9]+)*)_ravlt-(?P<arch>[tsbl])(?:_(?P<neck>fpn))?'
    r'_(?:(?P<gpus>\d+)xb(?P<batch>\d+)-)?(?P<amp>amp-)?(?:(?P<aug>ms-crop|lsj)-)?'
    r'(?P<schedule>\d+)(?P<unit>x|e|k|it)'
    r'_(?P<data>[a-z0-9]+(?:-[a-z0-9]+)*?)(?:-(?P<crop>\d+x\d+))?')
SEGMENTATION_DATA = ('ade20k', 'ade-shapes', 'my-ade')
# the data part -> the data root its configs read (mmdet's / mmseg's layouts, the quick starts')
DATA_ROOTS = {'coco': 'data/coco', 'coco-panoptic': 'data/coco',
              'ade20k': 'data/ade/ADEChallengeData2016', 'coco-shapes': 'data/coco_shapes',
              'coco-panoptic-shapes': 'data/coco_panoptic_shapes', 'ade-shapes': 'data/ade_shapes',
              'my-coco': 'data/my_coco', 'my-ade': 'data/my_ade'}
# the algorithm part -> the detector type, or the decode head of an mmseg EncoderDecoder
MODEL_TYPES = {'mask-rcnn': 'MaskRCNN', 'retinanet': 'RetinaNet',
               'cascade-mask-rcnn': 'CascadeRCNN', 'dino-4scale': 'DINO',
               'mask2former': ('Mask2Former', 'Mask2FormerHead'), 'upernet': 'UPerHead',
               'fpn': 'FPNHead'}
COCO_TRAIN_IMAGES = 118287  # mmdet names its iteration-based COCO schedules in epochs


def parse_name(path) -> dict:
    """The parts of a config's file name; ValueError naming the file and what is off."""
    relative = path.relative_to(CONFIGS).as_posix()
    found = NAME.fullmatch(path.stem)
    if not found:
        raise ValueError(
            f'configs/{relative}: not named as mmdet and mmseg name their configs: expected '
            '{algorithm}_ravlt-{t|s|b|l}[_fpn]_[{gpus}xb{batch}-][amp-][ms-crop-|lsj-]'
            '{schedule}_{data}[-{crop}].py, e.g. mask-rcnn_ravlt-s_fpn_amp-1x_coco.py')
    parts = found.groupdict()
    folder, algorithm = path.parent.name, parts['algorithm']
    if folder in HEADS and algorithm != HEADS[folder]:
        raise ValueError(f'configs/{relative}: a {algorithm} config in {folder}/, the folder '
                         f'of the {HEADS[folder]} configs')
    if algorithm not in HEADS.values():
        raise ValueError(f'configs/{relative}: unknown algorithm {algorithm!r} (known: '
                         f'{", ".join(HEADS.values())})')
    if (parts['neck'] is None) == (algorithm in RCNN_STYLE):
        raise ValueError(f'configs/{relative}: mmdet names the neck (_fpn_) of '
                         f'{", ".join(RCNN_STYLE)} configs, and only theirs')
    if parts['gpus'] is None and algorithm not in RCNN_STYLE:
        raise ValueError(f'configs/{relative}: no GPUs x batch part ({{gpus}}xb{{batch}}-, e.g. '
                         '8xb2-): only mmdet\'s R-CNN and RetinaNet names leave out 8xb2')
    if (parts['crop'] is None) == (parts['data'] in SEGMENTATION_DATA):
        raise ValueError(f'configs/{relative}: mmseg names the crop size of its data '
                         '(ade20k-512x512), mmdet none')
    if parts['data'] not in DATA_ROOTS:
        raise ValueError(f'configs/{relative}: unknown data {parts["data"]!r} (known: '
                         f'{", ".join(DATA_ROOTS)})')
    return parts


def named_configs():
    """Every config of configs/ but the bases, mmdeploy's (named as mmdeploy names its own) and
    the file kept under its old name."""
    return sorted(p for p in CONFIGS.rglob('*.py')
                  if not {'_base_', 'deploy'} & set(p.relative_to(CONFIGS).parts) and p != KEPT)


def config_id(path):
    return path.relative_to(CONFIGS).as_posix()


def pipeline_types(node):
    """Every transform type of a (nested) pipeline."""
    if isinstance(node, dict):
        return {node.get('type')} | set().union(*map(pipeline_types, node.values()))
    if isinstance(node, (list, tuple)):
        return set().union(set(), *map(pipeline_types, node))
    return set()


def test_configs_are_grouped_in_the_head_folders_of_mmdet_and_mmseg():
    folders = {p.name for p in CONFIGS.iterdir() if p.is_dir() and not p.name.startswith('__')}
    assert folders == {*HEADS, 'quickstart', 'custom', 'deploy', '_base_'}
    for folder in HEADS:  # the installed mmdet's / mmseg's own folder names
        package = 'mmseg' if folder in ('upernet', 'sem_fpn') else 'mmdet'
        runtime = Path(names.package_config(f'{package}::_base_/default_runtime.py'))
        assert (runtime.parents[1] / folder).is_dir(), f'{package} has no configs/{folder}/'
    assert [p.name for p in CONFIGS.glob('*.py')] == [KEPT.name]  # no other loose config


@pytest.mark.parametrize('path', named_configs(), ids=config_id)
def test_every_config_is_named_as_mmdet_and_mmseg_name_theirs(path):
    parse_name(path)  # raises naming the file


@pytest.mark.parametrize('path', named_configs(), ids=config_id)
def test_the_name_tells_what_the_config_trains(path):
    parts, cfg = parse_name(path), Config.fromfile(path)
    what = config_id(path)
    model = cfg.model
    assert model.backbone.type == 'RAVLT' and model.backbone.arch == parts['arch'], what
    kind = model.type if model.type != 'EncoderDecoder' else model.decode_head.type
    assert kind in (MODEL_TYPES[parts['algorithm']], *MODEL_TYPES[parts['algorithm']]), what
    if parts['algorithm'] == 'cascade-mask-rcnn':
        assert model.roi_head.mask_head, what
    if parts['algorithm'] == 'dino-4scale':
        assert model.neck.num_outs == 4, what  # the 4 scales the encoder attends over
    if parts['neck']:
        assert model.neck.type == 'FPN', what
    assert cfg.train_dataloader.batch_size == int(parts['batch'] or 2), what
    if parts['gpus'] is None:  # mmdet's default 8 GPUs x 2 images
        assert cfg.auto_scale_lr.base_batch_size == 16, what
    assert (cfg.optim_wrapper.type == 'AmpOptimWrapper') == bool(parts['amp']), what
    transforms = pipeline_types(cfg.train_dataloader.dataset.get('pipeline', []))
    if parts['aug'] == 'ms-crop':  # DETR's multi-scale resize, half the time after a crop
        assert {'RandomChoice', 'RandomChoiceResize', 'RandomCrop'} <= transforms, what
    if parts['aug'] == 'lsj':  # large-scale jitter
        assert {'RandomResize', 'RandomCrop'} <= transforms, what
    schedule, unit = int(parts['schedule']), parts['unit']
    train = cfg.train_cfg
    if unit in 'xe' and 'max_epochs' in train:
        assert train.max_epochs == schedule * (12 if unit == 'x' else 1), what
    elif unit == 'e':  # iteration-based: epochs of COCO's training images
        total = cfg.train_dataloader.batch_size * int(parts['gpus'])
        assert round(train.max_iters * total / COCO_TRAIN_IMAGES) == schedule, what
    else:
        assert train.max_iters == schedule * (1000 if unit == 'k' else 1), what
    if parts['crop']:
        assert tuple(model.data_preprocessor.size) == tuple(
            int(s) for s in parts['crop'].split('x')), what
    assert cfg.train_dataloader.dataset.data_root.rstrip('/') == DATA_ROOTS[parts['data']], what


@pytest.mark.parametrize('name, reason', [
    ('maskrcnn_ravlt_s_coco.py', 'not named as mmdet and mmseg name their configs'),
    ('mask_rcnn/retinanet_ravlt-s_fpn_amp-1x_coco.py',
     'a retinanet config in mask_rcnn/, the folder of the mask-rcnn configs'),
    ('mask_rcnn/mask-rcnn_ravlt-s_amp-1x_coco.py', r'mmdet names the neck \(_fpn_\)'),
    ('upernet/upernet_ravlt-s_fpn_8xb2-160k_ade20k-512x512.py', r'mmdet names the neck'),
    ('upernet/upernet_ravlt-s_amp-160k_ade20k-512x512.py', 'no GPUs x batch part'),
    ('sem_fpn/fpn_ravlt-t_8xb2-80k_ade20k.py', r'mmseg names the crop size'),
    ('quickstart/yolo_ravlt-t_1xb4-8e_coco-shapes.py', "unknown algorithm 'yolo'"),
    ('custom/mask-rcnn_ravlt-s_fpn_1x_voc.py', "unknown data 'voc'"),
])
def test_a_name_off_the_convention_is_refused_naming_the_file(name, reason):
    with pytest.raises(ValueError, match=rf'^configs/{re.escape(name)}: {reason}'):
        parse_name(CONFIGS / name)


def test_the_zoo_names_its_models_by_their_config_files():
    for name in zoo.config_names():
        path = CONFIGS / zoo.get(name)['Config'].split('configs/', 1)[1]
        assert path.is_file() and path.stem == name
        assert path.parent.name in HEADS
    for name in set(zoo.models()) - set(zoo.config_names()):  # mmpretrain's style
        assert re.fullmatch(r'ravlt-[tsbl]_in1k', name), name


# ------------------------------------------------------------------------- the names before
def test_every_old_name_maps_to_a_model_of_the_zoo():
    renamed = zoo.renamed()
    # every model with weights had a name before; the configs-only ones came with theirs
    assert set(renamed.values()) == {n for n in zoo.models() if zoo.has_weights(n)}
    assert len(renamed) == len(set(renamed.values())) == 25
    assert not set(renamed) & set(zoo.models())
    assert renamed['maskrcnn_ravlt_s_coco'] == 'mask-rcnn_ravlt-s_fpn_amp-1x_coco'
    assert renamed['ravlt_s_in1k'] == 'ravlt-s_in1k'


@pytest.mark.parametrize('old', sorted(zoo.renamed()))
def test_an_old_name_resolves_wherever_a_zoo_name_is_taken(old):
    new = zoo.renamed()[old]
    assert zoo.current_name(old) == new and zoo.current_name(new) == new
    assert zoo.get(old) is zoo.get(new)
    assert zoo.weights_url(old) == zoo.weights_url(new)
    assert find_checkpoint(old) == zoo.weights_url(new)  # checkpoints, init_cfg, --weights
    assert zoo.variant(old) == zoo.variant(new)
    if new in zoo.config_names():
        config = zoo.config_path(new)
        assert zoo.config_path(old) == config
        named = names.resolve_model(old)  # what every tool and demo takes as a model's name
        assert (named.config, named.weights, named.zoo_name) == (
            config, zoo.weights_url(new), new)
        assert named.from_zoo
        # the demos' MODEL
        named, inputs = inference.resolve_demo_model(old, ['x.jpg'])
        assert (named.config, named.weights, inputs) == (config, zoo.weights_url(new), ['x.jpg'])


def test_an_old_name_logs_one_warning_naming_the_new_one(tmp_path):
    MMLogger.get_instance(f'names-{tmp_path.name}', log_file=str(tmp_path / 'log.txt'))
    zoo._warn_renamed.cache_clear()
    for _ in range(3):
        zoo.config_path('upernet_ravlt_b_ade20k')
    zoo.get('upernet_ravlt-b_8xb2-amp-160k_ade20k-512x512')  # the new name: no warning
    lines = (tmp_path / 'log.txt').read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith("WARNING - RAVLT zoo: 'upernet_ravlt_b_ade20k' is now named "
                             "'upernet_ravlt-b_8xb2-amp-160k_ade20k-512x512' (configs/renamed.yml)")


def test_tools_take_an_old_name_or_an_old_path_as_config():
    new = 'retinanet_ravlt-t_fpn_amp-1x_coco'
    for old in ('retinanet_ravlt_t_coco', 'configs/retinanet_ravlt_t_coco.py'):
        args = Namespace(config=old, launcher='none', cfg_options=None, work_dir=None)
        cfg = cli.load_config(args)  # tools/train.py's and tools/test.py's
        assert args.config == zoo.config_path(new) and cfg.filename == zoo.config_path(new)
        assert cfg.work_dir == f'./work_dirs/{new}'
        assert cli.model_or_exit(old).config == zoo.config_path(new)  # deploy.py, onnx_demo.py
    # a path that never was a config of the zoo stays an error naming it
    with pytest.raises(SystemExit, match='config not found: configs/retinanet_ravlt_x_coco.py'):
        cli.model_or_exit('configs/retinanet_ravlt_x_coco.py')
    with pytest.raises(ValueError, match="Unknown model 'retinanet_ravlt_x_coco': the model zoo"):
        names.resolve_model('retinanet_ravlt_x_coco')


def test_an_inferencer_takes_an_old_name():
    # RAVLTDetInferencer / RAVLTSegInferencer's model lookup, without building the model
    inferencer = SimpleNamespace(_release_weights=None)
    cfg, _ = inference.ReleaseWeightsMixin._load_model_from_metafile(
        inferencer, 'fpn_ravlt_s_ade20k')
    new = 'fpn_ravlt-s_8xb2-amp-80k_ade20k-512x512'
    assert cfg.filename == zoo.config_path(new)
    assert inferencer._release_weights == zoo.weights_url(new)


def test_init_cfg_takes_an_old_imagenet_name(file_server, torch_home, monkeypatch):
    source = randomised(RAVLT(TINY_ARCH))
    torch.save(release_imagenet_checkpoint(source), file_server.root / 'RAVLT_T.pth')
    monkeypatch.setenv(zoo.URL_ROOT_ENV, file_server.url)
    model = pretrained('ravlt_t_in1k')  # init_cfg=dict(type='Pretrained', checkpoint=...)
    model.init_weights()
    loaded = model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in source.state_dict().items()
               if not k.startswith('extra_norms.'))
    assert (torch_home / 'RAVLT_T.pth').is_file()


def test_the_kept_old_file_is_the_renamed_config():
    new = CONFIGS / 'mask_rcnn' / 'mask-rcnn_ravlt-s_fpn_amp-1x_coco.py'
    assert Config.fromfile(KEPT).to_dict() == Config.fromfile(new).to_dict()
    code = [line for line in KEPT.read_text().splitlines() if not line.startswith('#')]
    assert code == ["_base_ = ['./mask_rcnn/mask-rcnn_ravlt-s_fpn_amp-1x_coco.py']"]
    old_files = [config_id(p) for p in CONFIGS.rglob('*.py') if p.stem in zoo.renamed()]
    assert old_files == [KEPT.name]


def test_old_names_are_left_in_the_map_the_kept_file_and_the_tests_only():
    try:
        files = subprocess.check_output(['git', 'ls-files', '-z', '--cached', '--others',
                                         '--exclude-standard'], cwd=REPO, text=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git clone')
    old = re.compile(r'(?<![\w-])(' + '|'.join(map(re.escape, zoo.renamed())) + r')(?![\w-])')
    allowed = {'configs/renamed.yml', f'configs/{KEPT.name}'}
    found = []
    for name in filter(None, files.split('\0')):
        path = REPO / name
        if name in allowed or name.startswith('tests/') or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # images
            continue
        found += [f'{name}: {m.group(1)}' for m in old.finditer(text)]
    assert not found, f'old zoo names outside configs/renamed.yml: {found}'
