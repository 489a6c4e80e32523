"""The OpenMMLab stack under ravlt_dense: checked at import, its config scopes made to resolve.

Two stacks are tested: OpenMMLab's own releases (``requirements/stack.txt``) and the maintained
OneDL fork (``requirements/stack-onedl.txt``), which ships the same import packages (``mmengine``,
``mmcv``, ``mmdet``, ``mmseg``) under other distribution names. ``install_requires`` names neither,
since pip would then install upstream mmcv over the fork's; ``import ravlt_dense`` checks the
installed versions instead, as mmdet checks mmcv's, and setup.py builds the extras
``ravlt_dense[upstream]`` and ``ravlt_dense[onedl]`` from :data:`STACKS`.

Only the standard library is imported at module level: setup.py reads this file.
"""
import importlib.util
from importlib.metadata import PackageNotFoundError, distribution, version
from typing import Dict, List, Tuple

# import name -> (distribution, lowest version, first version not supported), per stack
STACKS: Dict[str, Dict[str, Tuple[str, str, str]]] = {
    'upstream': {
        'mmengine': ('mmengine', '0.10.0', '1.0.0'),
        'mmcv': ('mmcv', '2.0.0', '2.2.0'),
        'mmdet': ('mmdet', '3.3.0', '3.4.0'),
        'mmseg': ('mmsegmentation', '1.2.0', '1.3.0'),
    },
    'onedl': {
        'mmengine': ('onedl-mmengine', '0.10.8', '1.0.0'),
        'mmcv': ('onedl-mmcv', '2.3.0', '2.4.0'),
        'mmdet': ('onedl-mmdetection', '3.5.0', '3.6.0'),
        'mmseg': ('onedl-mmsegmentation', '1.4.0', '1.5.0'),
    },
}
# imported without being declared: by upstream mmseg's utils (the fork declares them), and by
# the fork's mmdet.evaluation, which warns "metrics will not be computed" without it
UNDECLARED = {'upstream': ['ftfy', 'regex'], 'onedl': ['faster-coco-eval']}
STACK_NAMES = {'upstream': 'OpenMMLab', 'onedl': 'OneDL fork'}
SETUP = {'upstream': 'make env', 'onedl': 'STACK=onedl make env'}
PIN_FILES = {'upstream': 'requirements/stack.txt', 'onedl': 'requirements/stack-onedl.txt'}
# the backbone needs mmengine alone; the others are checked when they are installed
REQUIRED = ('mmengine', )
# the scopes of mmdet/mmseg base configs that our configs inherit (`mmseg::...`)
CONFIG_SCOPES = ('mmdet', 'mmseg')


def extra_requirements(stack: str) -> List[str]:
    """The requirement lines of the extra ``ravlt_dense[<stack>]``."""
    return [f'{dist}>={low},<{high}' for dist, low, high in STACKS[stack].values()
            ] + UNDECLARED[stack]


def installed(module: str) -> List[Tuple[str, str, str]]:
    """``(stack, distribution, version)`` of each installed distribution of ``module``."""
    found = []
    for stack, packages in STACKS.items():
        dist = packages[module][0]
        try:
            found.append((stack, dist, version(dist)))
        except PackageNotFoundError:
            pass
    return found


def _how_to_fix(module: str, stack: str) -> str:
    dist, low, high = STACKS[stack][module]
    return (f'install "{dist}>={low},<{high}" (pip install "ravlt_dense[{stack}]" installs the '
            f'whole {STACK_NAMES[stack]} stack), or set up a tested environment: '
            f'`{SETUP[stack]}` ({PIN_FILES[stack]}).')


def check_dependencies() -> None:
    """Raise ImportError, naming what is installed, what is needed and how to fix it, when an
    OpenMMLab package is missing (mmengine), of a version ravlt_dense was not tested with, or
    installed from both stacks at once (they overwrite each other's files)."""
    for module in STACKS['upstream']:
        found = installed(module)
        if len(found) > 1:
            names = ' and '.join(f'{dist} {ver} ({STACK_NAMES[stack]})'
                                 for stack, dist, ver in found)
            raise ImportError(
                f'ravlt_dense: {names} are both installed and write the same package '
                f'`{module}`. Keep one stack: pip uninstall -y {found[0][1]} {found[1][1]}, then '
                f'install the one you want again, or set up a fresh environment '
                f'(`{SETUP["upstream"]}` or `{SETUP["onedl"]}`).')
        if not found:
            if module in REQUIRED and importlib.util.find_spec(module) is None:
                raise ImportError(
                    f'ravlt_dense needs {module}, which is not installed: pip install '
                    f'"ravlt_dense[upstream]" (OpenMMLab) or "ravlt_dense[onedl]" (OneDL fork), '
                    f'or set up a tested environment: `{SETUP["upstream"]}` or '
                    f'`{SETUP["onedl"]}`.')
            continue  # not installed, or a source tree on sys.path (no metadata to check)
        from mmengine.utils import digit_version
        stack, dist, ver = found[0]
        _, low, high = STACKS[stack][module]
        if not digit_version(low) <= digit_version(ver) < digit_version(high):
            raise ImportError(f'ravlt_dense needs {dist}>={low},<{high} ({STACK_NAMES[stack]} '
                              f'stack), but {dist} {ver} is installed: '
                              + _how_to_fix(module, stack))


def register_config_scopes() -> None:
    """Let ``mmseg::`` base configs resolve on the OneDL fork, as they do upstream.

    mmengine resolves ``<scope>::path`` through ``MODULE2PACKAGE[scope]``, the pip distribution
    of that scope, which it then locates. The fork's mmengine keeps upstream's
    ``'mmseg': 'mmsegmentation'``, a distribution the fork does not ship (its mmseg comes as
    onedl-mmsegmentation), so every config inheriting ``mmseg::`` stops with "mmsegmentation is
    not installed" (``mmdet::`` works: its entry is the module name, which mmengine also finds).
    Where the named distribution is missing, the entry is pointed at the one installed (or at
    the module itself, when that distribution does not name its module); upstream's stack and a
    fork that fixes its table are left as they are.
    """
    from mmengine.config.utils import MODULE2PACKAGE
    for scope in CONFIG_SCOPES:
        package = MODULE2PACKAGE.get(scope)
        if package is None or _locatable(package) or importlib.util.find_spec(scope) is None:
            continue
        found = installed(scope)
        MODULE2PACKAGE[scope] = (found[0][1] if found and _names_module(found[0][1], scope)
                                 else scope)


def _locatable(package: str) -> bool:
    """Whether mmengine finds ``package``: a distribution of that name or a module (its
    fallback, by which ``'mmdet': 'mmdet'`` resolves without a distribution named mmdet)."""
    try:
        version(package)
        return True
    except PackageNotFoundError:
        return importlib.util.find_spec(package) is not None


def _names_module(dist: str, module: str) -> bool:
    """Whether ``dist``'s metadata names ``module`` (top_level.txt: where mmengine looks)."""
    top_level = distribution(dist).read_text('top_level.txt') or ''
    return module in top_level.split()
