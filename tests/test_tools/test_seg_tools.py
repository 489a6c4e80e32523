"""Segmentation: configs (parameter counts), train/test/resume through tools/, the demo, bad data.

CPU only. The end-to-end part trains the Semantic FPN quick-start config for a few iterations on
a tiny generated shapes set in tmp_path, in subprocesses, as a user would run the tools.
"""
import importlib.util
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ravlt_dense  # noqa: F401  registers RAVLT
import ravlt_dense.datasets  # noqa: F401  registers CheckSegLabels
from ravlt_dense import zoo
from ravlt_dense.runner import check_datasets

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
FPN_QUICK = CONFIGS / 'quickstart' / 'fpn_ravlt_t_shapes.py'
UPER_QUICK = CONFIGS / 'quickstart' / 'upernet_ravlt_t_shapes.py'

# The ADE20K models of the zoo (configs/metafile.yml), by config file name.
ADE20K_CONFIGS = sorted(f'{name}.py' for name in zoo.config_names() if name.endswith('_ade20k'))


def _load_script(path):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def ade_gen():
    return _load_script(ROOT / 'tools' / 'data' / 'make_ade_shapes.py')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """As in _tool: small models, shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(cfg_model):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return MODELS.build(cfg_model)


def _walk(node):
    """Every dict in a (nested) config."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)


# ------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------
def test_every_ade20k_config_is_in_the_zoo():
    assert len(ADE20K_CONFIGS) == 7
    assert sorted(p.name for p in CONFIGS.glob('*_ade20k.py')) == ADE20K_CONFIGS


@pytest.mark.parametrize('name', ADE20K_CONFIGS)
def test_ade20k_config_param_count(name):
    cfg = Config.fromfile(CONFIGS / name)
    model = _build(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    assert params == zoo.measured(name[:-len('.py')])['params']  # the README's figure
    params /= 1e6
    paper = zoo.paper_figures(name[:-len('.py')])['params']
    assert abs(params - paper) < 1.0, f'{name}: {params:.2f}M, paper {paper}M'
    variant = name.split('_')[2]
    assert cfg.model.backbone.arch == variant
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=zoo.weights_url(f'ravlt_{variant}_in1k'))


@pytest.mark.parametrize('name', ADE20K_CONFIGS)
def test_ade20k_config_recipe(name):
    cfg = Config.fromfile(CONFIGS / name)
    assert cfg.model.decode_head.num_classes == 150
    assert not [d for d in _walk(cfg._cfg_dict.to_dict()) if d.get('type') == 'SyncBN']
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    assert cfg.model.data_preprocessor.size == (512, 512)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        types = [t['type'] for t in loader.dataset.pipeline]
        assert types.index('CheckSegLabels') + 1 == types.index('LoadAnnotations')
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
    cfg = Config.fromfile(CONFIGS / 'upernet_ravlt_s_ade20k.py')
    model = _build(cfg.model)
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
            checks = [t for t in loader.dataset.pipeline if t['type'] == 'CheckSegLabels']
            assert checks[0]['num_classes'] == len(ade_gen.CLASSES)
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.val_evaluator.type == 'IoUMetric'
        assert cfg.model.backbone.arch == 't' and cfg.model.backbone.init_cfg is None


def test_upernet_quickstart_trains_one_step():
    """The UperNet quick-start model takes a training step on CPU (the FPN one runs end to end)."""
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(UPER_QUICK)
    torch.manual_seed(0)
    model = _build(cfg.model)
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


# ------------------------------------------------------------------------------------------
# Bad input in the data path
# ------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_shapes(tmp_path, ade_gen):
    root = tmp_path / 'shapes'
    ade_gen.make_ade_shapes(str(root), num_train=3, num_val=2, size=64, seed=1)
    return root


def _dataset(root, split='train'):
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(FPN_QUICK)
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    loader.dataset.data_root = str(root)
    init_default_scope('mmseg')
    return DATASETS.build(loader.dataset)


def test_missing_data_root_is_named(tmp_path):
    missing = tmp_path / 'nowhere'
    cfg = Config.fromfile(FPN_QUICK)
    cfg.train_dataloader.dataset.data_root = str(missing)
    with pytest.raises(FileNotFoundError, match=f'{missing}/images/training does not exist'):
        check_datasets(cfg, loaders=('train_dataloader', ))
    cfg = Config.fromfile(CONFIGS / 'fpn_ravlt_t_ade20k.py')
    if not osp.isdir('data/ade/ADEChallengeData2016'):
        with pytest.raises(FileNotFoundError, match=r'ADEChallengeData2016.*make_ade_shapes'):
            check_datasets(cfg)


def test_missing_data_root_through_train_py(tmp_path):
    proc = _tool('train.py', FPN_QUICK, '--work-dir', tmp_path / 'work', '--cfg-options',
                 f'train_dataloader.dataset.data_root={tmp_path / "nowhere"}', check=False)
    assert proc.returncode != 0
    assert f'{tmp_path / "nowhere"}/images/training does not exist' in proc.stderr


def test_corrupt_image_is_named(tiny_shapes):
    bad = tiny_shapes / 'images' / 'training' / '000001.jpg'
    bad.write_bytes(b'not a jpeg at all')
    dataset = _dataset(tiny_shapes)
    with pytest.raises(AssertionError, match=f'failed to load image: {bad}'):
        dataset[1]


def test_corrupt_label_is_named(tiny_shapes):
    bad = tiny_shapes / 'annotations' / 'training' / '000002.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    dataset = _dataset(tiny_shapes)
    dataset[0]  # the intact samples still load
    with pytest.raises(ValueError, match=f'Cannot decode the label map {bad}'):
        dataset[2]


def test_rgb_label_map_is_rejected(tiny_shapes):
    bad = tiny_shapes / 'annotations' / 'validation' / '000000.png'
    cv2.imwrite(str(bad), np.full((64, 64, 3), 2, np.uint8))
    with pytest.raises(ValueError, match=f'Label map {bad} has shape .*single-channel'):
        _dataset(tiny_shapes, 'val')[0]


@pytest.mark.parametrize('value', [6, 200])
def test_label_out_of_range_is_named(tiny_shapes, value):
    path = tiny_shapes / 'annotations' / 'validation' / '000001.png'
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    label[:3, :3] = value
    cv2.imwrite(str(path), label)
    with pytest.raises(ValueError, match=rf'Label map {path} holds values that are no class: '
                       rf'{value}\. With num_classes=5 the stored values must be 0 \(unlabelled\)'
                       r', 1\.\.5'):
        _dataset(tiny_shapes, 'val')[1]


def test_ignore_value_255_is_allowed(tiny_shapes):
    path = tiny_shapes / 'annotations' / 'training' / '000000.png'
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    label[:8] = 255
    cv2.imwrite(str(path), label)
    sample = _dataset(tiny_shapes)[0]
    assert sample['inputs'].shape[0] == 3


def test_check_seg_labels_without_reduce_zero_label(tmp_path):
    from ravlt_dense.datasets import CheckSegLabels
    path = str(tmp_path / 'label.png')
    cv2.imwrite(path, np.array([[0, 1], [2, 255]], np.uint8))
    check = CheckSegLabels(num_classes=3)
    assert check(dict(seg_map_path=path, reduce_zero_label=False))['seg_map_path'] == path
    with pytest.raises(ValueError, match=r'holds values that are no class: 2\. .*0\.\.1 \(classes\)'):
        CheckSegLabels(num_classes=2)(dict(seg_map_path=path, reduce_zero_label=False))
    assert CheckSegLabels(num_classes=2)(dict(img_path='x.jpg')) == dict(img_path='x.jpg')
    cv2.imwrite(path, np.array([[0, 300], [1, 2]], np.uint16))  # uint8 loaders would wrap 300 to 44
    with pytest.raises(ValueError, match='no class: 300'):
        CheckSegLabels(num_classes=150)(dict(seg_map_path=path, reduce_zero_label=True))


def test_image_smaller_than_crop_is_padded_with_ignore(tmp_path):
    """RandomCrop returns a smaller image whole; the data preprocessor pads it to the crop size
    with label 255, which the loss ignores."""
    from mmseg.registry import DATASETS
    img, label = tmp_path / 'img', tmp_path / 'ann'
    img.mkdir(), label.mkdir()
    cv2.imwrite(str(img / 'small.jpg'), np.full((20, 28, 3), 128, np.uint8))
    cv2.imwrite(str(label / 'small.png'), np.full((20, 28), 2, np.uint8))
    cfg = Config.fromfile(FPN_QUICK)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root, ds_cfg.data_prefix = str(tmp_path), dict(img_path='img', seg_map_path='ann')
    # Without the resize, so the crop (64x64) is larger than the image.
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t['type'] != 'RandomResize']
    init_default_scope('mmseg')
    sample = DATASETS.build(ds_cfg)[0]
    assert tuple(sample['inputs'].shape[1:]) == (20, 28)
    model = _build(cfg.model)
    data = model.data_preprocessor(dict(inputs=[sample['inputs']],
                                        data_samples=[sample['data_samples']]), training=True)
    assert tuple(data['inputs'].shape) == (1, 3, 64, 64)
    gt = data['data_samples'][0].gt_sem_seg.data[0]
    assert (gt[:20, :28] == 1).all() and (gt[20:] == 255).all() and (gt[:, 28:] == 255).all()
    losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.isfinite(losses['decode.loss_ce'])


# ------------------------------------------------------------------------------------------
# End to end: tools/train.py, tools/test.py, resume, demo
# ------------------------------------------------------------------------------------------
def _tool(script, *args, check=True):
    # One thread: these models are tiny, and on a shared 2-core machine two OpenMP threads per
    # process spin against other processes and run many times slower.
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / script), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f'{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def _last_scalars(work_dir):
    logs = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in logs[-1].read_text().splitlines()]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, ade_gen):
    """FPN quick-start trained 2 iterations (batch 2) on 4 generated images, validated at the end."""
    tmp = tmp_path_factory.mktemp('seg_e2e')
    data = tmp / 'shapes'
    ade_gen.make_ade_shapes(str(data), num_train=4, num_val=2, size=64, seed=0)
    work = tmp / 'work'
    options = ['--cfg-options', f'train_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}',
               f'test_dataloader.dataset.data_root={data}', 'train_dataloader.batch_size=2',
               'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']
    proc = _tool('train.py', FPN_QUICK, '--work-dir', work, *options)
    return dict(tmp=tmp, data=data, work=work, options=options, log=proc.stdout + proc.stderr)


def test_train_and_val(trained):
    assert (trained['work'] / 'iter_2.pth').is_file()
    assert (trained['work'] / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    scalars = _last_scalars(trained['work'])
    train = [s for s in scalars if 'loss' in s]
    assert [s['iter'] for s in train] == [1, 2] and all(np.isfinite(s['loss']) for s in train)
    val = [s for s in scalars if 'mIoU' in s]
    assert len(val) == 1 and 0 <= val[0]['mIoU'] <= 100


def test_test_py_gives_miou_and_label_maps(trained):
    out = trained['tmp'] / 'pred'
    proc = _tool('test.py', FPN_QUICK, trained['work'] / 'iter_2.pth', '--work-dir',
                 trained['tmp'] / 'test', '--out', out,
                 '--cfg-options', f'test_dataloader.dataset.data_root={trained["data"]}')
    assert 'mIoU' in proc.stdout + proc.stderr
    scalars = json.loads(next((trained['tmp'] / 'test').glob('*/*.json')).read_text())
    assert 0 <= scalars['mIoU'] <= 100 and 'aAcc' in scalars
    preds = sorted(out.glob('*.png'))
    assert [p.name for p in preds] == ['000000.png', '000001.png']
    label = cv2.imread(str(preds[0]), cv2.IMREAD_UNCHANGED)
    assert label.shape == (64, 64)


def test_resume_continues_from_saved_iteration(trained):
    work = trained['tmp'] / 'resume'
    shutil.copytree(trained['work'], work)
    options = [o.replace('max_iters=2', 'max_iters=3') for o in trained['options']]
    proc = _tool('train.py', FPN_QUICK, '--work-dir', work, '--resume', *options)
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    scalars = _last_scalars(work)
    assert [s['iter'] for s in scalars if 'loss' in s] == [3]
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_3.pth')


def _load_demo():
    return _load_script(ROOT / 'demo' / 'seg_demo.py')


def test_demo_writes_overlays_and_label_maps(trained, tmp_path):
    import matplotlib
    photo = Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg'  # 600x512
    demo = _load_demo()
    val_dir = trained['data'] / 'images' / 'validation'
    out = tmp_path / 'demo'
    written = demo.main([str(FPN_QUICK), str(trained['work'] / 'iter_2.pth'), str(val_dir),
                         str(photo), '--out-dir', str(out), '--device', 'cpu',
                         '--opacity', '0.6', '--slide', '--crop-size', '64', '64',
                         '--stride', '48', '48'])
    assert [Path(w['image']).name for w in written] == ['000000.jpg', '000001.jpg',
                                                        'grace_hopper.jpg']
    for item in written:
        img = cv2.imread(item['image'])
        vis = cv2.imread(item['vis'])
        label = cv2.imread(item['pred'], cv2.IMREAD_UNCHANGED)
        assert item['vis'].endswith('.png') and item['pred'].endswith('.png')
        assert vis.shape == img.shape and label.shape == img.shape[:2]
        assert label.dtype == np.uint8 and label.max() < 5
        assert not np.array_equal(vis, img)  # the classes are painted over the image
    assert sorted(os.listdir(out / 'pred')) == ['000000.png', '000001.png', 'grace_hopper.png']


def test_demo_class_names(trained, tmp_path, ade_gen):
    """Overlays are labelled with the checkpoint's classes, else the config's, never Cityscapes'."""
    demo = _load_demo()
    cfg = demo.load_config(str(FPN_QUICK))
    ckpt = trained['work'] / 'iter_2.pth'
    inferencer = demo.build_inferencer(cfg, str(ckpt), 'cpu')
    assert tuple(inferencer.visualizer.dataset_meta['classes']) == ade_gen.CLASSES
    bare = tmp_path / 'bare.pth'  # weights only, as a converted or hand-made checkpoint may be
    torch.save(dict(state_dict=torch.load(ckpt, map_location='cpu')['state_dict']), bare)
    inferencer = demo.build_inferencer(cfg, str(bare), 'cpu')
    assert tuple(inferencer.visualizer.dataset_meta['classes']) == ade_gen.CLASSES
    assert tuple(inferencer.model.dataset_meta['classes']) == ade_gen.CLASSES


def test_demo_errors_name_the_file(trained, tmp_path):
    demo = _load_demo()
    ckpt = str(trained['work'] / 'iter_2.pth')
    with pytest.raises(FileNotFoundError, match='Checkpoint not found: .*missing.pth'):
        demo.main([str(FPN_QUICK), str(tmp_path / 'missing.pth'), str(tmp_path)])
    with pytest.raises(FileNotFoundError, match='Input image or folder not found: .*nope.jpg'):
        demo.main([str(FPN_QUICK), ckpt, str(tmp_path / 'nope.jpg')])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f'No images .* in folder {empty}'):
        demo.main([str(FPN_QUICK), ckpt, str(empty)])
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'\xff\xd8 garbage')
    with pytest.raises(ValueError, match=f'Cannot decode the image {bad}'):
        demo.main([str(FPN_QUICK), ckpt, str(bad), '--out-dir', str(tmp_path / 'out')])
    with pytest.raises(SystemExit):
        demo.main([str(FPN_QUICK), ckpt, str(bad), '--opacity', '1.5'])
