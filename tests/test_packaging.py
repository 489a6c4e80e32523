"""Packaging on either tested stack (requirements/stack.txt: OpenMMLab's releases;
requirements/stack-onedl.txt: the OneDL fork, same import packages under onedl-* names): one
version; install_requires naming no OpenMMLab distribution, the stacks as extras; each stack's
pins satisfy every range and pass the import-time check, whose refusals say what to do;
`mmseg::` configs resolving; and `pip install -e .[<stack>]` into an environment that already has
the stack (no set-up script, no network)."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
from packaging.requirements import Requirement

import ravlt_dense
from conftest import run_tool
from ravlt_dense import stack

REPO = Path(__file__).resolve().parents[1]
PIN_FILES = {'upstream': 'stack.txt', 'onedl': 'stack-onedl.txt'}
OPENMMLAB = {dist for packages in stack.STACKS.values() for dist, _, _ in packages.values()}


def requirement_lines(name, device='cpu'):
    """Requirements of requirements/NAME, without the lines marked for the other device."""
    other = '[cuda]' if device == 'cpu' else '[cpu]'
    lines = (line.split('#', 1)[0].strip() for line in (REPO / 'requirements' / name).open()
             if other not in line)
    return [Requirement(line) for line in lines if line]


def stack_pins(name, device='cpu'):
    return {req.name.lower(): next(iter(req.specifier)).version
            for req in requirement_lines(name, device) if str(req.specifier).startswith('==')}


def active_stack():
    """The stack of this environment: the one whose mmcv distribution is installed."""
    found = stack.installed('mmcv')
    assert len(found) == 1, f'one mmcv distribution expected, found {found}'
    return found[0][0]


def test_version_has_one_home():
    assert importlib.metadata.version('ravlt_dense') == ravlt_dense.__version__
    assert "__version__ = '" in (REPO / 'ravlt_dense' / 'version.py').read_text()
    assert (REPO / 'LICENSE').read_text().count('Apache License') >= 1


def test_install_requires_names_no_openmmlab_distribution_and_extras_name_the_stacks():
    dist = importlib.metadata.distribution('ravlt_dense')
    requires = [Requirement(r) for r in dist.requires or []]
    declared = {r for r in requires if r.marker is None}
    assert {str(r) for r in declared} == {str(r) for r in requirement_lines('runtime.txt')}
    # naming mmcv (or onedl-mmcv) would make pip install it over the other stack's
    assert not {r.name for r in declared} & OPENMMLAB
    for req in declared:
        installed = importlib.metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), f'{req} vs {installed}'
    assert {'tests', 'export', 'all', 'upstream', 'onedl'} <= set(
        dist.metadata.get_all('Provides-Extra'))
    for name in stack.STACKS:
        extra = {str(Requirement(str(r).split(';')[0])) for r in requires
                 if r.marker is not None and r.marker.evaluate({'extra': name})}
        assert extra == {str(Requirement(r)) for r in stack.extra_requirements(name)}, name
    assert 'onedl-mmcv<2.4.0,>=2.3.0' in {str(Requirement(r))
                                          for r in stack.extra_requirements('onedl')}


# setup.py's ranges
RANGE_FILES = sorted(p.name for p in (REPO / 'requirements').glob('*.txt')
                     if p.name not in PIN_FILES.values())


@pytest.mark.parametrize('name', RANGE_FILES + ['extra'])
@pytest.mark.parametrize('stack_name', sorted(PIN_FILES))
def test_stack_pins_satisfy_the_ranges(stack_name, name):
    pin_file = PIN_FILES[stack_name]
    pins = stack_pins(pin_file)
    reqs = ([Requirement(r) for r in stack.extra_requirements(stack_name)] if name == 'extra'
            else requirement_lines(name))
    for req in reqs:
        assert req.name.lower() in pins, f'{req.name} of {name} is not pinned in {pin_file}'
        assert req.specifier.contains(pins[req.name.lower()], prereleases=True), (
            f'{pin_file} pins {req.name}=={pins[req.name.lower()]}, outside {name}: {req}')


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_pin_files_have_one_torch_per_device(device):
    assert stack_pins('stack.txt', 'cpu')['torch'] == stack_pins('stack-onedl.txt', 'cpu')['torch']
    for name in PIN_FILES.values():
        torches = [r for r in requirement_lines(name, device) if r.name == 'torch']
        # the upstream stack has no tested CUDA torch (setup_env.sh says so and stops)
        assert len(torches) == (0 if (name, device) == ('stack.txt', 'cuda') else 1), name


@pytest.mark.parametrize('stack_name', sorted(PIN_FILES))
def test_each_stacks_pins_pass_the_import_check(stack_name, monkeypatch):
    pins = stack_pins(PIN_FILES[stack_name])
    fake_installed(monkeypatch, {dist: pins[dist] for dist in OPENMMLAB if dist in pins})
    stack.check_dependencies()


def fake_installed(monkeypatch, versions):
    def version(dist):
        if dist not in versions:
            raise importlib.metadata.PackageNotFoundError(dist)
        return versions[dist]
    monkeypatch.setattr(stack, 'version', version)


def test_import_check_names_installed_and_needed_version_and_the_fix(monkeypatch):
    fake_installed(monkeypatch, {'onedl-mmengine': '0.10.12', 'onedl-mmcv': '2.4.1'})
    with pytest.raises(ImportError) as error:
        stack.check_dependencies()
    message = str(error.value)
    assert 'needs onedl-mmcv>=2.3.0,<2.4.0 (OneDL fork stack), but onedl-mmcv 2.4.1 is' in message
    assert 'pip install "ravlt_dense[onedl]"' in message and 'STACK=onedl make env' in message


def test_import_check_refuses_two_stacks_sharing_a_package(monkeypatch):
    fake_installed(monkeypatch, {'mmengine': '0.10.7', 'mmcv': '2.1.0', 'onedl-mmcv': '2.3.6'})
    with pytest.raises(ImportError, match=r'mmcv 2\.1\.0 \(OpenMMLab\) and onedl-mmcv 2\.3\.6 '
                       r'\(OneDL fork\) are both installed .* pip uninstall -y mmcv onedl-mmcv'):
        stack.check_dependencies()


def test_import_check_without_mmengine_says_how_to_install_a_stack(monkeypatch):
    fake_installed(monkeypatch, {})
    real_find_spec = stack.importlib.util.find_spec
    monkeypatch.setattr(stack.importlib.util, 'find_spec',
                        lambda name: None if name == 'mmengine' else real_find_spec(name))
    with pytest.raises(ImportError, match=r'needs mmengine, which is not installed: pip install '
                       r'"ravlt_dense\[upstream\]" \(OpenMMLab\) or "ravlt_dense\[onedl\]"'):
        stack.check_dependencies()


def test_mmseg_config_scope_points_at_the_installed_distribution(monkeypatch, tmp_path):
    # the fork's mmengine names a distribution that is not there (mmsegmentation): repaired
    monkeypatch.setitem(MODULE2PACKAGE, 'mmseg', 'no-such-mmsegmentation')
    stack.register_config_scopes()
    assert MODULE2PACKAGE['mmseg'] == stack.installed('mmseg')[0][1]
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("_base_ = 'mmseg::_base_/default_runtime.py'\n")
    assert Config.fromfile(str(cfg_file)).default_scope == 'mmseg'
    # a table naming what is installed (upstream's) is left as it is
    monkeypatch.setitem(MODULE2PACKAGE, 'mmdet', 'mmdet')
    stack.register_config_scopes()
    assert MODULE2PACKAGE['mmdet'] == 'mmdet'


def test_pip_install_editable_into_an_existing_stack():
    # --no-index: every requirement, the stack's extra included, must already be satisfied.
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index',
                           '--no-build-isolation', '-e', f'{REPO}[{active_stack()}]'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'Would install ravlt_dense-{ravlt_dense.__version__}' in proc.stdout


def test_mmdet_metrics_import_without_a_missing_package_warning():
    # the fork's mmdet.evaluation warns "faster_coco_eval is not installed, metrics will not be
    # computed" on every run unless the stack brings faster-coco-eval (stack-onedl.txt pins it)
    proc = run_tool(['-c', 'import mmdet.evaluation'], env={'PYTHONWARNINGS': 'default'})
    assert 'is not installed' not in proc.stdout + proc.stderr, proc.stderr[-3000:]
