"""What tools/train.py and tools/test.py add around mmengine's Runner.

* A check that the datasets of a config exist, with a message that says what to put where.
* Distributed runs on CPU-only machines: mmengine 0.10.7's ``init_dist`` calls
  ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[rank]``, both of which fail
  without CUDA. Initialising the gloo group first (the Runner then skips ``init_dist``) and
  wrapping with ``device_ids=None`` keeps mmengine's own runner and wrapper.
"""
import os
import os.path as osp
from typing import Iterator, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.hooks import Hook

# What a missing dataset should look like, by dataset type.
DATASET_HELP = {
    'CocoDataset': (
        'Put COCO 2017 at data/coco/ in the standard layout: data/coco/annotations/'
        'instances_{train,val}2017.json, data/coco/train2017/, data/coco/val2017/ (or symlink '
        'data/coco to it), or point the config at it with --cfg-options '
        'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=... '
        'test_dataloader.dataset.data_root=... For a small synthetic set in COCO format run '
        '`python tools/data/make_coco_shapes.py`.'),
    'ADE20KDataset': (
        'Put ADE20K (ADEChallengeData2016) at data/ade/ADEChallengeData2016/ in the standard '
        'layout: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png, '
        'or point the config at it with --cfg-options train_dataloader.dataset.data_root=... '
        'For a small synthetic set in the ADE20K layout run `python tools/data/make_ade_shapes.py`.'),
    # the quick-start configs' datasets
    'BaseSegDataset': 'The quick-start set is made by `python tools/data/make_ade_shapes.py` '
                      '(writes data/ade_shapes).',
}


def _datasets(cfg: Config) -> Iterator[Tuple[str, dict]]:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        stack = [dataset] if dataset else []
        while stack:  # unwrap RepeatDataset / ConcatDataset / MultiImageMixDataset ...
            ds = stack.pop()
            if ds.get('dataset'):
                stack.append(ds['dataset'])
            elif ds.get('datasets'):
                stack.extend(ds['datasets'])
            else:
                yield loader, ds


def check_datasets(cfg: Config, loaders=('train_dataloader', 'val_dataloader',
                                         'test_dataloader')) -> None:
    """Raise FileNotFoundError naming the missing path and how to provide the dataset."""
    for loader, ds in _datasets(cfg):
        if loader not in loaders:
            continue
        root = ds.get('data_root') or ''
        paths = []
        if ds.get('ann_file'):
            paths.append(osp.join(root, ds['ann_file']))
        for prefix in (ds.get('data_prefix') or {}).values():
            if isinstance(prefix, str) and prefix:
                paths.append(osp.join(root, prefix))
        if not paths and root:
            paths.append(root)
        for path in paths:
            if not osp.exists(path):
                hint = DATASET_HELP.get(ds.get('type'), 'Check data_root and ann_file/data_prefix '
                                        'of the dataset in the config.')
                raise FileNotFoundError(
                    f'{loader}: {ds.get("type", "dataset")} not found: {path} does not exist '
                    f'(data_root={root!r}).\n{hint}')


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start the gloo process group for ``launcher='pytorch'`` runs on machines without CUDA."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ValueError(f'On a machine without CUDA only --launcher pytorch (torchrun) is '
                         f'supported, got --launcher {launcher}')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # torchrun provides the env:// rendezvous
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def set_local_rank(local_rank: int) -> None:
    os.environ.setdefault('LOCAL_RANK', str(local_rank))


def build_model(cfg: Config) -> torch.nn.Module:
    """The model of a config, built in the config's scope (mmdet or mmseg)."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return MODELS.build(cfg.model)


def load_config(args) -> Config:
    """The config of a train/test command line: --cfg-options, --launcher and the work dir
    (``--work-dir``, else the config's, else work_dirs/CONFIG_NAME), as mmdet's tools do."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def load_checkpoint_strictly(runner, checkpoint: str, config: str) -> None:
    """Load a checkpoint for evaluation, refusing one that does not fit the model.

    mmengine's runner loads ``load_from`` non-strictly: a checkpoint of another variant or model
    only logs warnings and the metrics of a half-initialised model follow. Here any missing,
    unexpected or mis-shaped key is an error that names the keys.
    """
    try:
        runner.load_checkpoint(checkpoint, map_location='cpu', strict=True)
    except RuntimeError as err:
        raise RuntimeError(
            f'Checkpoint {checkpoint} does not fit the model of {config}:\n{err}\n'
            'Evaluate it with the config it was trained with; convert the authors\' mmdet 2.x / '
            'mmseg 0.x files first (tools/model_converters/ravlt_release_to_mm.py); '
            '--non-strict evaluates anyway, loading what fits (mmengine\'s default).') from None


class PlainParamGroupsHook(Hook):
    """Turns the optimizer's param groups into plain dicts before training, so that the runner's
    ``compile=True`` can trace the optimizer step inside ``train_step``.

    mmengine's optimizer constructor builds the groups through the registry, which makes them
    ``ConfigDict``s; torch 2.13's dynamo fails on an optimizer whose groups are a dict subclass
    (InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute 'items').
    """
    priority = 'VERY_LOW'  # after the optimizer is built and a resumed state is loaded

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if hasattr(wrapper, 'values') else [wrapper]
        for optim_wrapper in wrappers:
            groups = optim_wrapper.optimizer.param_groups
            groups[:] = [dict(group) for group in groups]
