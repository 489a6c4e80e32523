"""The command lines of the tools: the options that tools/train.py and tools/test.py share
with mmdet's and mmseg's tools, the config they load from them, and the one spelling of an
image size, ``--shape H W`` (mmdet's get_flops style), of the tools that take one."""
import argparse
import importlib.util
import os
import os.path as osp
from typing import Optional, Sequence, Union

from mmengine.config import Config, DictAction


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


def load_config(args) -> Config:
    """The config of a train/test command line (a file, a name of the model zoo or an
    ``mmdet::`` / ``mmseg::`` name, see :func:`config_file`):
    --cfg-options, --launcher and the work dir (``--work-dir``, else the config's, else
    work_dirs/CONFIG_NAME), as mmdet's tools do."""
    args.config = config_file(args.config)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def config_file(config: str) -> str:
    """The file of a config named as the tools take it: a path, a name of RAVLT's model zoo
    (``mask-rcnn_ravlt-s_fpn_amp-1x_coco``, or a name it had before: :func:`zoo.current_name`),
    or an OpenMMLab package's own config as ``_base_`` lists name them
    (``mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py``)."""
    if '::' in config:
        package, _, path = config.partition('::')
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or spec.origin is None:
            raise ValueError(f"{config}: no installed package '{package}' to read it from "
                             '(package::path names a config of an installed OpenMMLab '
                             'package, e.g. mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py)')
        root = osp.join(osp.dirname(spec.origin), '.mim', 'configs')
        file = osp.join(root, path)
        if not osp.isfile(file):
            raise FileNotFoundError(f"{config}: {package} has no config '{path}' (looked in "
                                    f'{root}; the names are those of {package}\'s configs/)')
        return file
    if osp.isfile(config) or config.endswith('.py'):
        return config if osp.isfile(config) else renamed_config_file(config) or config
    from ravlt_dense import zoo
    return zoo.config_path(config)  # ValueError naming the zoo's models


def renamed_config_file(config: str) -> Optional[str]:
    """The file of a zoo config given by the path it had before the configs took mmdet's and
    mmseg's names (its file name is an old zoo name: ``configs/renamed.yml``), with a warning
    naming the new one; None for any other path."""
    from ravlt_dense import zoo
    name = osp.splitext(osp.basename(config))[0]
    return zoo.config_path(name) if name in zoo.renamed() else None


def existing_config(config: str, what: str = 'config') -> str:
    """:func:`config_file` for a command line: the file, or SystemExit saying what is wrong."""
    try:
        file = config_file(config)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error))
    if not osp.isfile(file):
        raise SystemExit(f'{what} not found: {config}')
    return file


def add_shape_argument(parser: argparse.ArgumentParser, help: str = 'input height and width',
                       default: Union[Sequence[int], str, None] = None) -> None:
    """``--shape H W`` (or ``--shape S``: a square); read with :func:`parsed_shape`.

    ``default``: the shape taken when none is given, or a text saying where the tool takes a
    missing one from (the option is then None); without it the option is required.
    """
    value = None if default is None or isinstance(default, str) else list(default)
    shown = ' '.join(map(str, value)) if value else default
    parser.add_argument('--shape', type=int, nargs='+', metavar=('H', 'W'), default=value,
                        required=default is None,
                        help=f'{help}: H W, or one size for a square image'
                        + (f' (default: {shown})' if shown else ''))


def parsed_shape(parser: argparse.ArgumentParser, shape: Sequence[int],
                 minimum: int = 1) -> list:
    """``[H, W]`` of a ``--shape`` value, or a parser error (exit 2) that names the problem."""
    shape = list(shape) * 2 if len(shape) == 1 else list(shape)
    if len(shape) != 2:
        parser.error(f'--shape takes H W (or one size for a square), got {len(shape)} values')
    if min(shape) < minimum:
        parser.error(f'--shape must be at least {minimum} {minimum}, got {shape[0]} {shape[1]}')
    return shape
