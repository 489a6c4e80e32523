"""What tools/train.py and tools/test.py add around mmengine's Runner.

* A check that the datasets of a config exist, with a message that says what to put where, and
  an explanation when a COCO-format annotation file names none of the config's classes.
* Distributed runs on CPU-only machines (torchrun or srun): mmengine 0.10.7's ``init_dist`` calls
  ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[rank]``, both of which fail
  without CUDA. Initialising the gloo group first (the Runner then skips ``init_dist``) and
  wrapping with ``device_ids=None`` keeps mmengine's own runner and wrapper.
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import re
import subprocess
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
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


def dataset_metainfo(cfg: Config, dataset: dict) -> dict:
    """The metainfo (classes, palette...) a dataset of the config gets: its own ``metainfo``
    over the METAINFO of its type (e.g. COCO's 80 classes for a plain ``CocoDataset``).

    Args:
        cfg (Config): The config (its ``default_scope`` picks the dataset registry).
        dataset (dict): One dataset of it (``type``, optional ``metainfo``).
    """
    from mmengine.registry import DATASETS
    with DATASETS.switch_scope_and_registry(cfg.get('default_scope', 'mmdet')) as registry:
        dataset_cls = registry.get(dataset.get('type', ''))
    return {**getattr(dataset_cls, 'METAINFO', {}), **(dataset.get('metainfo') or {})}


def _preview(names: Sequence[str], limit: int) -> str:
    """The first ``limit`` names, quoted, then '...' if there are more."""
    names = list(names)
    return ', '.join(map(repr, names[:limit])) + (', ...' if len(names) > limit else '')


def find_class_mismatch(cfg: Config) -> Optional[str]:
    """Why the datasets of ``cfg`` are empty, if a COCO-format annotation file shares no category
    name with the config's classes (mmdet then drops every image, and mmengine only says "need
    at least one array to concatenate"); None when every annotation file fits."""
    for loader, ds in _datasets(cfg):
        ann_file = osp.join(ds.get('data_root') or '', ds.get('ann_file') or '')
        if not ann_file.endswith('.json') or not osp.isfile(ann_file):
            continue
        classes = dataset_metainfo(cfg, ds).get('classes')
        try:
            with open(ann_file) as f:
                categories = [c['name'] for c in json.load(f).get('categories', [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a COCO-format file: nothing to compare
        if classes is None or set(classes) & set(categories):
            continue
        return (
            f'{loader}: the categories of {ann_file} ({len(categories)}: '
            f'{_preview(categories, 8)}) and the classes of the config ({len(classes)}: '
            f'{_preview(classes, 8)}) have no name in common, so every image was dropped. Give '
            f'the dataset the annotation\'s class names, e.g. in the config: metainfo = '
            f'dict(classes=({_preview(categories, 3)})) passed to train/val/test_dataloader.'
            f'dataset.metainfo, and set num_classes of the heads to {len(categories)}; or fix '
            f'the category names in the annotation file.')
    return None


@contextlib.contextmanager
def explain_dataset_errors(cfg: Config):
    """Re-raise a failure of the wrapped run with the reason when the config's classes and an
    annotation file's categories do not overlap (checked only on failure: reading a large
    annotation file again costs time)."""
    try:
        yield
    except Exception as err:
        reason = find_class_mismatch(cfg)
        if reason is None:
            raise
        raise ValueError(reason) from err


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start the gloo process group for ``--launcher pytorch`` (torchrun) and ``--launcher
    slurm`` (srun) runs on machines without CUDA; with CUDA mmengine's ``init_dist`` does it."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher == 'slurm':
        export_slurm_env()
    elif launcher != 'pytorch':
        raise ValueError(f'On a machine without CUDA only --launcher pytorch (torchrun) and '
                         f'--launcher slurm (srun) are supported, got --launcher {launcher}')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # the env:// rendezvous of torchrun / above
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def finish_distributed() -> None:
    """Close the process group of a distributed run once every rank is done (mmengine leaves
    it open): left to the interpreter's exit, gloo's threads were seen to abort a finished rank
    ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def export_slurm_env() -> None:
    """Translate srun's task variables into torch's env:// rendezvous variables, as mmengine's
    ``_init_dist_slurm`` does on GPU nodes: RANK, WORLD_SIZE and LOCAL_RANK from SLURM_PROCID,
    SLURM_NTASKS and SLURM_LOCALID; MASTER_ADDR (unless set) is the first host of the job and
    MASTER_PORT (unless set) torch's default 29500."""
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm needs the variables that srun sets, missing '
                           f'{missing}: start the job with srun (tools/slurm_train.sh), or use '
                           f'torchrun and --launcher pytorch (tools/dist_train.sh)')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = first_slurm_host(os.environ['SLURM_NODELIST'])


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[03-05,9],cpu1``: from ``scontrol show
    hostnames`` (what mmengine asks) where installed, else read from the list itself."""
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                             text=True, timeout=30)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no Slurm client on this machine
    match = re.match(r'([^,\[]+)(?:\[([^\]]+)\]([^,\[]*))?', nodelist.strip())
    if match is None:
        raise ValueError(f'Cannot read the first host of SLURM_NODELIST={nodelist!r}: set '
                         f'MASTER_ADDR to the host of rank 0')
    prefix, ranges, suffix = match.groups()
    if ranges is None:
        return prefix
    return prefix + re.split(r'[-,]', ranges)[0] + suffix  # "03-05,9" -> "03": padding kept


def parse_tool_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line of tools/train.py or tools/test.py: the tool's own options plus the
    ``--cfg-options``, ``--launcher`` and ``--local_rank`` they share (as mmdet's and mmseg's
    tools declare them); ``--local_rank`` is exported as LOCAL_RANK unless the launcher set it.

    Args:
        parser (argparse.ArgumentParser): The tool's parser, with its own options.
    """
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_model(cfg: Config) -> torch.nn.Module:
    """The model of a config, built in the config's scope (mmdet or mmseg).

    Args:
        cfg (Config): A config with ``model`` (and ``default_scope``, default mmdet).
    """
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
    """Load a checkpoint (file or URL; ours or the authors' mmdet 2.x / mmseg 0.x, converted on
    load) for evaluation, refusing one that does not fit the model.

    mmengine's runner loads ``load_from`` non-strictly: a checkpoint of another variant or model
    only logs warnings and the metrics of a half-initialised model follow. Here any missing,
    unexpected or mis-shaped key is an error that names the keys.
    """
    from mmengine.model import is_model_wrapper

    from ravlt_dense.checkpoint import load_model_checkpoint
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    try:
        load_model_checkpoint(model, checkpoint, what=f'the model of {config}',
                              hint='give the path of a local copy instead')
    except ValueError as err:
        raise ValueError(
            f'{err}\nEvaluate it with the config it was trained with; --non-strict evaluates '
            'anyway, loading what fits (mmengine\'s default).') from None


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
