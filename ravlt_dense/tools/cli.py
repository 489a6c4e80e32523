"""The command lines of the tools: the options that tools/train.py and tools/test.py share
with mmdet's and mmseg's tools, the config they load from them, and the one spelling of an
image size, ``--shape H W`` (mmdet's get_flops style), of the tools that take one."""
import argparse
import importlib
import os
import os.path as osp
from typing import Optional, Sequence, Union

from mmengine.config import Config, DictAction

from ravlt_dense.tools.names import NamedModel, resolve_model


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
    """The config of a train/test command line, its model named as every tool takes one
    (:func:`ravlt_dense.tools.names.resolve_model`: a file, a zoo name or an ``mmdet::`` /
    ``mmseg::`` name), with --cfg-options, --launcher and the work dir (``--work-dir``, else
    the config's, else work_dirs/CONFIG_NAME), as mmdet's tools do. ``args.config`` becomes
    the config's file."""
    args.config = resolve_model(args.config).config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def add_custom_import(cfg: Config, module: str) -> None:
    """Import ``module`` (which registers what the config names) and list it in the config's
    ``custom_imports``, so that the config the run dumps works with mmdet's or mmseg's own
    tools too."""
    importlib.import_module(module)
    custom_imports = cfg.get('custom_imports') or dict(allow_failed_imports=False)
    imports = custom_imports.get('imports') or []
    imports = [imports] if isinstance(imports, str) else list(imports)
    if module not in imports:
        custom_imports['imports'] = [*imports, module]
    cfg.custom_imports = custom_imports


def model_or_exit(name: str, weights: Optional[str] = None, what: str = 'config') -> NamedModel:
    """:func:`ravlt_dense.tools.names.resolve_model` for a command line: the model, or
    SystemExit saying what is wrong with its name."""
    try:
        return resolve_model(name, weights)
    except FileNotFoundError as error:
        raise SystemExit(f'{what} not found: {name}' if str(error).startswith('config not found')
                         else str(error))
    except ValueError as error:
        raise SystemExit(str(error))


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
