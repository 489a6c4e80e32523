"""Packaging: one version, install_requires from requirements/, pins that satisfy the ranges, and
`pip install -e .` into an environment that already has the stack (no set-up script, no network)."""
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import ravlt_dense

REPO = Path(__file__).resolve().parents[1]


def requirement_lines(name):
    lines = (line.split('#', 1)[0].strip() for line in (REPO / 'requirements' / name).open())
    return [Requirement(line) for line in lines if line]


def stack_pins():
    return {req.name.lower(): next(iter(req.specifier)).version
            for req in requirement_lines('stack.txt') if str(req.specifier).startswith('==')}


def test_version_has_one_home():
    assert importlib.metadata.version('ravlt_dense') == ravlt_dense.__version__
    assert "__version__ = '" in (REPO / 'ravlt_dense' / 'version.py').read_text()
    assert (REPO / 'LICENSE').read_text().count('Apache License') >= 1


def test_install_requires_is_runtime_txt_and_is_satisfied():
    dist = importlib.metadata.distribution('ravlt_dense')
    declared = {Requirement(r) for r in dist.requires or [] if 'extra ==' not in r}
    assert {str(r) for r in declared} == {str(r) for r in requirement_lines('runtime.txt')}
    for req in declared:
        installed = importlib.metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), f'{req} vs {installed}'
    extras = set(dist.metadata.get_all('Provides-Extra'))
    assert {'tests', 'all'} <= extras


# setup.py's ranges; gpu_bundle.txt locks the GPU machine's wheel bundle (another Python and
# stack: tests/test_tools/test_gpu_session.py checks it against stack-onedl.txt)
GPU_LOCKS = ('gpu_bundle.txt', )
RANGE_FILES = sorted(p.name for p in (REPO / 'requirements').glob('*.txt')
                     if p.name not in ('stack.txt', ) + GPU_LOCKS)


@pytest.mark.parametrize('name', RANGE_FILES)
def test_stack_pins_satisfy_the_ranges(name):
    pins = stack_pins()
    for req in requirement_lines(name):
        assert req.name.lower() in pins, f'{req.name} of {name} is not pinned in stack.txt'
        assert req.specifier.contains(pins[req.name.lower()], prereleases=True), (
            f'stack.txt pins {req.name}=={pins[req.name.lower()]}, outside {name}: {req}')


def test_pip_install_editable_into_an_existing_stack():
    # --no-index: every requirement must already be satisfied by the environment.
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index',
                           '--no-build-isolation', '-e', str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'Would install ravlt_dense-{ravlt_dense.__version__}' in proc.stdout
