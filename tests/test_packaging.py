"""Packaging on either tested stack (requirements/stack.txt: OpenMMLab's releases;
requirements/stack-onedl.txt: the OneDL fork, same import packages under onedl-* names): one
version; install_requires naming no OpenMMLab distribution, the stacks as extras; each stack's
pins satisfy every range and pass the import-time check, whose refusals say what to do;
`mmseg::` configs resolving; and `pip install -e .[<stack>]` into an environment that already has
the stack (no set-up script, no network)."""
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
from packaging.requirements import Requirement

import ravlt_dense
from ravlt_dense import stack

from conftest import metric_values, run_tool, shapes_options

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


# --------------------------------------------------------------------------------------------
# A wheel carries the configs, tools and demos in ravlt_dense/.mim/, as mmdet's and mmseg's do:
# zoo names work after `pip install` without a clone
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def installed_wheel(tmp_path_factory):
    """A fresh venv outside the clone with the wheel of ravlt_dense installed; the OpenMMLab
    stack comes from this environment (a .pth line), ravlt_dense only from the wheel."""
    import shutil
    import sysconfig
    root = tmp_path_factory.mktemp('wheel')
    # the files of the tree (tracked, or new and not ignored), as a fresh clone has them: setuptools
    # builds in the source's build/, where an earlier build's files would ride along
    source = root / 'source'
    files = subprocess.check_output(['git', 'ls-files', '-z', '--cached', '--others',
                                     '--exclude-standard'], cwd=REPO, text=True).split('\0')
    for name in filter(None, files):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, '-m', 'pip']
    subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', root,
                    source], check=True, capture_output=True, timeout=600)
    wheel = next(root.glob('ravlt_dense-*.whl'))
    venv = root / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True)
    python = venv / 'bin' / 'python'
    site = Path(subprocess.check_output(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        text=True).strip())
    subprocess.run([*pip, 'install', '--no-deps', '--no-index', '--ignore-installed', '-q',
                    '--prefix', venv, wheel], check=True, capture_output=True, timeout=300)
    (site / 'stack.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    work = root / 'elsewhere'
    work.mkdir()

    def run(*args, **env):
        return subprocess.run([python, *map(str, args)], cwd=work, capture_output=True,
                              text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1',
                                                               PYTHONWARNINGS='ignore', **env))
    return dict(site=site, mim=site / 'ravlt_dense' / '.mim', work=work, run=run)


def test_wheel_resolves_zoo_names_without_a_clone(installed_wheel):
    run, mim = installed_wheel['run'], installed_wheel['mim']
    proc = run('-c', 'import ravlt_dense; '
               'from mmengine.config import Config; '
               'from ravlt_dense.tools.names import resolve_model; '
               'm = resolve_model("mask-rcnn_ravlt-s_fpn_amp-1x_coco"); '
               'config, weights = m.config, m.weights; '
               'cfg = Config.fromfile(config); '
               'print(ravlt_dense.__file__, config, weights, cfg.model.backbone.arch, '
               'cfg.model.roi_head.bbox_head.num_classes, '
               'resolve_model("maskrcnn_ravlt_s_coco").config)')  # the name it had before
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, config, weights, arch, classes, old_name_config = proc.stdout.splitlines()[-1].split()
    assert "'maskrcnn_ravlt_s_coco' is now named 'mask-rcnn_ravlt-s_fpn_amp-1x_coco'" in proc.stdout
    assert package == str(installed_wheel['site'] / 'ravlt_dense' / '__init__.py')
    assert config == str(mim / 'configs' / 'mask_rcnn' / 'mask-rcnn_ravlt-s_fpn_amp-1x_coco.py')
    assert old_name_config == config
    assert weights.endswith('/maskrcnn_s_1x_12_epoch.pth') and (arch, classes) == ('s', '80')
    for name in ('model-index.yml', 'configs/metafile.yml', 'configs/renamed.yml',
                 'tools/train.py', 'tools/test.py', 'demo/image_demo.py', 'demo/seg_demo.py'):
        assert (mim / name).is_file(), name


def test_wheel_runs_the_demo_and_the_inferencers_by_zoo_name(installed_wheel, tmp_path):
    from ravlt_dense import zoo
    from ravlt_dense.models import build_model
    run, mim = installed_wheel['run'], installed_wheel['mim']
    cfg = Config.fromfile(zoo.config_path('fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512'))
    cfg.model.backbone.pop('init_cfg')
    torch.manual_seed(0)
    torch.save(dict(state_dict=build_model(cfg).state_dict()), tmp_path / 'fpn_t.pth')
    image = tmp_path / 'photo.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8))
    proc = run(mim / 'demo' / 'seg_demo.py', 'fpn_ravlt-t_8xb2-amp-80k_ade20k-512x512', image,
               '--weights', tmp_path / 'fpn_t.pth', '--out-dir', tmp_path / 'out',
               '--device', 'cpu')
    assert proc.returncode == 0, proc.stderr[-3000:]
    label = cv2.imread(str(tmp_path / 'out' / 'pred' / 'photo.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (64, 96) and label.max() < 150  # ADE20K's 150 classes
    # mmdet's inferencer on a zoo name: its config, then its weights from the zoo's URL
    proc = run('-c', 'from ravlt_dense.apis import RAVLTDetInferencer; '
               'RAVLTDetInferencer("mask-rcnn_ravlt-t_fpn_amp-1x_coco", device="cpu")',
               RAVLT_ZOO_URL_ROOT='http://127.0.0.1:9/zoo')
    assert proc.returncode != 0
    assert 'http://127.0.0.1:9/zoo/maskrcnn_t_1x_12_epoch.pth' in proc.stderr, \
        proc.stderr[-3000:]
    # the tools: a zoo name for the config
    proc = run(mim / 'tools' / 'train.py', 'upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512')
    assert proc.returncode != 0
    assert 'ADE20KDataset not found: data/ade/ADEChallengeData2016' in proc.stderr, \
        proc.stderr[-3000:]



# --------------------------------------------------------------------------------------------
# OpenMMLab's `mim` reads the zoo of the wheel and of the editable install, as it reads mmdet's
# --------------------------------------------------------------------------------------------
def mim_command(python, *args, cwd=None, **env):
    """``mim ARGS`` (openmim's command line) run by ``python``."""
    return subprocess.run([str(python), '-c', 'from mim.cli import cli; cli()', *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore',
                                   **env))


def zoo_rows(output: str) -> set:
    """The model names of a `mim search` listing (its "config id" rows)."""
    from ravlt_dense import zoo
    return {name for name in zoo.models() if f'config id: {name}' in output}


def test_mim_searches_the_zoo_of_the_editable_install():
    from ravlt_dense import zoo
    proc = mim_command(sys.executable, 'search', 'ravlt_dense', cwd=REPO.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert zoo_rows(proc.stdout) == set(zoo.models())
    proc = mim_command(sys.executable, 'search', 'ravlt_dense', '--model', 'mask r-cnn',
                       cwd=REPO.parent)
    assert zoo_rows(proc.stdout) == {name for name, model in zoo.models().items()
                                     if model['In Collection'] == 'Mask R-CNN'}


def test_mim_searches_downloads_trains_and_tests_with_the_wheel(installed_wheel, file_server,
                                                                shapes, tmp_path):
    from ravlt_dense import zoo
    python, mim, work = (installed_wheel['site'].parents[2] / 'bin' / 'python',
                         installed_wheel['mim'], installed_wheel['work'])
    proc = mim_command(python, 'search', 'ravlt_dense', cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert zoo_rows(proc.stdout) == set(zoo.models())
    upernet = 'upernet_ravlt-s_8xb2-amp-160k_ade20k-512x512'
    proc = mim_command(python, 'search', 'ravlt_dense', '--config', upernet, cwd=work)
    assert zoo_rows(proc.stdout) == {upernet}
    miou = re.search(r'^ade20k/miou\s+([\d.]+)$', proc.stdout, re.M)
    assert miou and float(miou.group(1)) == zoo.metrics(upernet)['mIoU']

    # download: the config (mim writes it whole) and the weights, from the metafile's URL
    metafile = mim / 'configs' / 'metafile.yml'
    published = metafile.read_text()
    (file_server.root / 'maskrcnn_t_1x_12_epoch.pth').write_bytes(b'weights of RAVLT-T')
    metafile.write_text(published.replace(zoo.URL_ROOT, file_server.url))
    try:
        proc = mim_command(python, 'download', 'ravlt_dense', '--config',
                           'mask-rcnn_ravlt-t_fpn_amp-1x_coco', '--dest', tmp_path / 'dl', cwd=work)
    finally:
        metafile.write_text(published)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / 'dl' / 'maskrcnn_t_1x_12_epoch.pth').read_bytes() == b'weights of RAVLT-T'
    downloaded = Config.fromfile(str(tmp_path / 'dl' / 'mask-rcnn_ravlt-t_fpn_amp-1x_coco.py'))
    assert downloaded.model.backbone.arch == 't'

    # train and test a quick-start config found by its file name, as `mim train mmdet X.py`
    options = [*shapes_options(shapes), 'train_cfg.max_epochs=1']
    quick = 'mask-rcnn_ravlt-t_fpn_1xb4-8e_coco-shapes.py'
    proc = mim_command(python, 'train', 'ravlt_dense', quick,
                       '--work-dir', tmp_path / 'train', '--cfg-options', *options, cwd=work)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert str(mim / 'tools' / 'train.py') in proc.stdout
    checkpoint = tmp_path / 'train' / 'epoch_1.pth'
    assert checkpoint.is_file()
    proc = mim_command(python, 'test', 'ravlt_dense', quick,
                       '--checkpoint', checkpoint, '--work-dir', tmp_path / 'test',
                       '--cfg-options', *options, cwd=work)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metric_values(proc.stdout + proc.stderr))


def package_imports() -> dict:
    """Module -> the ravlt_dense modules it imports, at the top or inside functions alike
    (``from ravlt_dense import zoo`` and ``from . import x`` count as imports of that module)."""
    import ast
    package = REPO / 'ravlt_dense'
    names = {}
    for path in package.rglob('*.py'):
        parts = path.relative_to(REPO).with_suffix('').parts
        names['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    graph = {}
    for name, path in names.items():
        is_package = path.name == '__init__.py'
        base = name if is_package else name.rsplit('.', 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ''
                if node.level:
                    module = '.'.join(base.split('.')[:len(base.split('.')) - node.level + 1]
                                      + ([module] if module else []))
                for alias in node.names:  # a submodule imported by name, else the module
                    sub = f'{module}.{alias.name}'
                    found.add(sub if sub in names else module)
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = package_imports()
    assert 'ravlt_dense.checkpoint.loading' in graph and graph['ravlt_dense.tools.inference']

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt)
                               and reaches(nxt, goal, seen)):
                return True
        return False

    circles = [name for name in sorted(graph) if reaches(name, name, set())]
    assert not circles, f'modules on an import circle: {circles}'
