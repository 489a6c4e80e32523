"""tools/analysis/gpu_session.sh rehearsed on CPU: its stages and what it skips, the commands
it would run on the GPU machine, the bundle it installs, and tools/analysis/train_time.py's
table from mmengine's logs."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO, load_script, python_with_stub, tool_env

train_time = load_script('tools/analysis/train_time.py')


def session(tmp_path, *stages, **env):
    """Run the wrapper with its reports in tmp_path/out and its work in tmp_path/work."""
    env = dict(tool_env(), **{'PYTHON': sys.executable, 'OUT': str(tmp_path / 'out'),
                              'WORK': str(tmp_path / 'work'),
                              'BUNDLE': str(tmp_path / 'no_bundle'), **env})
    return subprocess.run(['bash', 'tools/analysis/gpu_session.sh', *stages], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_unknown_stage_is_refused(tmp_path):
    proc = session(tmp_path, 'setup', 'sideways')
    assert proc.returncode == 2
    assert 'usage: ' in proc.stderr and '[setup] [ops] [train] [bench]' in proc.stderr
    assert not (tmp_path / 'out').exists()  # nothing ran


def test_setup_skips_what_imports(tmp_path):
    # here mmengine, mmdet, mmseg and mmcv's ops import: no bundle is needed, nothing is built
    proc = session(tmp_path, 'setup')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / 'out' / 'gpu_session.md').read_text()
    assert '| setup | install | skipped: mmengine, mmdet and mmseg import | 0 |' in summary
    assert '| setup | mmcv CUDA ops | skipped: mmcv.ops imports | 0 |' in summary
    assert '| setup | the training flow imports | ok |' in summary
    # a second call on the same (warm) machine does not check again
    proc = session(tmp_path, 'setup')
    summary = (tmp_path / 'out' / 'gpu_session.md').read_text()
    assert '| setup | the training flow imports | skipped: checked before | 0 |' in summary
    assert '- mmcv 2.' in summary and 'device: ' in summary
    assert (tmp_path / 'out' / 'gpu_session_logs.tar.gz').is_file()


def python_without(tmp_path, module):
    """A Python where ``module`` does not import, as on the bare GPU machine before the set-up."""
    return python_with_stub(tmp_path / f'without-{module}', module,
                            f"raise ImportError('{module}: not installed')\n")


def test_setup_without_the_packages_needs_the_bundle(tmp_path):
    proc = session(tmp_path, 'setup', 'train', PYTHON=str(python_without(tmp_path, 'mmdet')))
    assert proc.returncode == 1
    assert 'set-up failed: later stages need it' in proc.stderr
    summary = (tmp_path / 'out' / 'gpu_session.md').read_text()
    assert (f'| setup | install | failed: no bundle at {tmp_path / "no_bundle"} (run '
            'tools/analysis/prepare_gpu_bundle.sh here and carry it) | 0 |') in summary
    assert '| train |' not in summary


def test_ops_runs_the_ops_tests_and_reports_their_counts(tmp_path):
    proc = session(tmp_path, 'ops')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / 'out' / 'gpu_session.md').read_text()
    name = 'mmcv ops against formulas / the CPU (tests/test_mmcv_ops.py)'
    assert f'| ops | {name} | ok |' in summary
    counts = re.search(rf'\| ops \| {re.escape(name)}: counts \| (.*) \| 0 \|', summary)
    assert counts, summary
    assert re.fullmatch(r'\d+ passed(, \d+ skipped)?(, \d+ warnings?)? in [\d.]+s', counts[1])


def test_bench_runs_every_gpu_test_the_kernels_first(tmp_path):
    proc = session(tmp_path, 'bench', DRY_RUN='1')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if ' -m pytest ' in ln]
    paths = [Path(arg).relative_to(REPO).as_posix()
             for arg in line.split(' -m gpu ', 1)[1].split() if arg.startswith(str(REPO))]
    assert paths[0] == 'tests/test_ops'
    collected = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-m',
                                'gpu', '-o', 'addopts=', 'tests'], cwd=REPO, env=tool_env(),
                               capture_output=True, text=True, timeout=120).stdout
    files = {ln.split('::')[0] for ln in collected.splitlines() if '::' in ln}
    assert files and all(any(f == p or f.startswith(p + '/') for p in paths) for f in files), (
        files, paths)


def test_bench_needs_no_mmcv_build(tmp_path):
    # the GPU machine before mmcv's build (no prebuilt wheel carried): the bundle's other
    # packages, the kernels' tests and the benchmark run; mmcv's tests wait for `setup`
    python = str(python_without(tmp_path, 'mmcv'))
    bundle = tmp_path / 'bundle'
    bundle.mkdir()
    proc = session(tmp_path, 'bench', DRY_RUN='1', PYTHON=python, BUNDLE=str(bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dry_runs = [line for line in proc.stdout.splitlines() if line.startswith('[dry run]')]
    assert [line.split('; ', 1)[1].split()[:4] for line in dry_runs] == [
        [python, '-m', 'pip', 'install'], [python, '-m', 'pytest', '-m'],
        [python, 'tools/analysis/benchmark.py', '--preset', 'gpu-session']]
    assert 'onedl-mmdetection' in dry_runs[0].split() and 'onedl-mmcv' not in dry_runs[0].split()
    assert 'tests/test_ops' in dry_runs[1] and 'test_mmcv_ops.py' not in dry_runs[1]
    assert ('| bench | tests/test_mmcv_ops.py | not run: mmcv.ops does not import (`setup` '
            'builds it) | 0 |') in proc.stdout
    # installed once per machine: a later call (here `setup`) does not install again
    (tmp_path / 'work' / '.bundle_installed').write_text('')
    proc = session(tmp_path, 'setup', DRY_RUN='1', PYTHON=python, BUNDLE=str(bundle))
    assert '| setup | install | skipped: installed before | 0 |' in proc.stdout
    assert 'failed: no onedl_mmcv-*.tar.gz in' in proc.stdout  # then mmcv's build is tried


@pytest.mark.parametrize('workers', ['4', '1'])
def test_gpu_tests_run_in_several_processes_where_xdist_imports(tmp_path, workers):
    # pytest-xdist, as the GPU machine has it
    with_xdist = python_with_stub(tmp_path / 'with-xdist', 'xdist')
    proc = session(tmp_path, 'bench', DRY_RUN='1', PYTHON=str(with_xdist), TEST_WORKERS=workers)
    [line] = [ln for ln in proc.stdout.splitlines() if ' -m pytest ' in ln]
    assert (' -m gpu -n 4 ' in line) == (workers == '4'), line
    # and not where it does not import
    proc = session(tmp_path, 'bench', DRY_RUN='1', PYTHON=str(python_without(tmp_path, 'xdist')),
                   TEST_WORKERS=workers)
    [line] = [ln for ln in proc.stdout.splitlines() if ' -m pytest ' in ln]
    assert ' -n ' not in line, line


def test_a_test_step_cut_by_its_limit_reports_what_ran(tmp_path):
    # 45 s of the budget (the import checks before it take ~15 s here): pytest -m gpu (minutes on
    # a CPU) is cut, the benchmark finds no time
    proc = session(tmp_path, 'bench', BUDGET='45')
    summary = (tmp_path / 'out' / 'gpu_session.md').read_text()
    assert re.search(r'\| bench \| python -m pytest -m gpu \| timed out after \d+ s', summary), \
        summary
    counts = re.search(r'\| bench \| python -m pytest -m gpu: counts \| cut: (.*) before the '
                       r'limit \| 0 \|', summary)
    assert counts and re.fullmatch(r'no test finished|(\d+ (error|failed|passed|skipped)(, )?)+',
                                   counts[1]), summary
    assert '| bench | tools/analysis/benchmark.py' in summary and 'not run: budget' in summary
    assert proc.returncode == 0


def test_setup_fails_on_a_dependency_the_training_flow_lacks(tmp_path):
    # mmdet, mmseg and mmcv.ops import, but mmdet's datasets need pycocotools (as, on the GPU
    # machine, they needed imgaug, which the bundle lacked): named in set-up, nothing trains
    proc = session(tmp_path, 'setup', 'train', PYTHON=str(python_without(tmp_path, 'pycocotools')))
    assert proc.returncode == 1
    assert 'set-up failed: later stages need it' in proc.stderr
    summary = (tmp_path / 'out' / 'gpu_session.md').read_text()
    assert ('| setup | the training flow imports | failed, exit 1: ImportError: pycocotools: '
            'not installed |') in summary
    assert '| train |' not in summary


@pytest.mark.parametrize('same_python', [True, False])
def test_setup_takes_a_prebuilt_cuda_wheel_for_this_python(tmp_path, same_python):
    tag = 'cp%d%d' % sys.version_info[:2] if same_python else 'cp39'
    wheel = tmp_path / 'bundle' / 'cuda' / f'onedl_mmcv-2.3.6-{tag}-{tag}-linux_x86_64.whl'
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b'')
    proc = session(tmp_path, 'setup', DRY_RUN='1', BUNDLE=str(tmp_path / 'bundle'),
                   PYTHON=str(python_without(tmp_path, 'mmcv.ops')))
    dry_runs = [line for line in proc.stdout.splitlines() if line.startswith('[dry run]')]
    if same_python:  # installed, no build
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert dry_runs[-2].endswith(f'--no-deps {wheel})')
        assert dry_runs[-1].endswith('import mmdet.apis, mmseg.apis, ravlt_dense.models)')
        assert f'mmcv: the prebuilt {wheel.name}, no build' in proc.stdout
    else:  # another Python's wheel is not tried: the source build is (its archive is missing)
        assert proc.returncode == 1
        assert not any(wheel.name in line for line in dry_runs)
        assert 'failed: no onedl_mmcv-*.tar.gz in' in proc.stdout


def test_train_runs_the_missions_commands(tmp_path):
    proc = session(tmp_path, 'train', DRY_RUN='1', ITERS='12')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = [line.split('; ', 1)[1] for line in proc.stdout.splitlines()
                if line.startswith('[dry run]')]
    data, runs = commands[:2], commands[2:]
    assert 'tools/data/make_coco_shapes.py --layout coco2017 --out data/coco --shape 800 1333 ' \
           '--num-train 24 --num-val 8' in data[0]
    assert 'tools/data/make_ade_shapes.py --out data/ade/ADEChallengeData2016 --shape 512 2048' \
        in data[1]
    assert [r.split(' --cfg-options')[0].split(' ', 1)[1] for r in runs] == [
        'tools/train.py configs/maskrcnn_ravlt_s_coco.py',
        'tools/train.py configs/upernet_ravlt_s_ade20k.py',
        'tools/train.py mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --amp']
    assert all('log_processor.window_size=1' in r and 'model.backbone.init_cfg=None' in r
               for r in runs)
    assert 'train_cfg.max_epochs=1' in runs[0] and 'train_cfg.max_iters=12' in runs[1]
    swin = (tmp_path / 'work' / 'run' / 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py').read_text()
    assert swin == "_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'\n"


def test_train_generates_only_the_data_its_models_use(tmp_path):
    # the lease's second call trains Mask R-CNN and Swin-T only: no ADE20K images to write
    proc = session(tmp_path, 'train', DRY_RUN='1', MODELS='maskrcnn swin')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line.startswith('[dry run]')]
    assert sum('make_coco_shapes.py' in c for c in commands) == 1
    assert not any('make_ade_shapes.py' in c for c in commands)
    assert [c.split('tools/train.py ')[1].split(' ')[0] for c in commands if 'train.py' in c] == [
        'configs/maskrcnn_ravlt_s_coco.py', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']


def bundle_pins():
    lines = (line.split('#', 1)[0].strip()
             for line in (REPO / 'requirements' / 'gpu_bundle.txt').open())
    return {r.name.lower(): r for r in map(Requirement, filter(None, lines))}


def test_bundle_is_the_onedl_stack():
    bundle = bundle_pins()
    stack = {r.name.lower(): r for r in map(Requirement, filter(None, (
        line.split('#', 1)[0].strip()
        for line in (REPO / 'requirements' / 'stack-onedl.txt').open())))}
    shared = [name for name in bundle if name in stack]
    assert {'onedl-mmengine', 'onedl-mmcv', 'onedl-mmdetection',
            'onedl-mmsegmentation'} <= set(shared)
    for name in shared:
        assert str(bundle[name].specifier) == str(stack[name].specifier), name
    assert all(str(r.specifier).startswith('==') for r in bundle.values())


def write_scalars(work_dir, times, data_time=0.01, memory=1000):
    log = work_dir / '20261201_000000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    records = [dict(lr=1e-4, loss=1.0, time=t, data_time=data_time, memory=memory + i,
                    iter=i + 1) for i, t in enumerate(times)]
    records.append({'coco/bbox_mAP': 0.0, 'step': 1})  # a validation record
    log.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_train_time_table(tmp_path):
    # two slow warm-up iterations, then 0.5 s: the median after the warm-up is 0.5 s
    write_scalars(tmp_path / 'a', [9.0, 7.0, 0.5, 0.6, 0.5, 0.4, 0.5])
    table = train_time.table([('A', str(tmp_path / 'a'), '7200'),
                              ('B', str(tmp_path / 'b'), '160000')], skip=2, gpus=8)
    header, _, a, b = table.splitlines()
    assert 'projected on 8 GPUs (h)' in header
    # 5 iterations timed, 0.5 s/iter of which 0.01 s data, 1006 MiB at most, 7200 x 0.5 s = 1 h
    assert a == '| A | 5 | 0.500 | 0.010 | 0.490 | 1006 | 7,200 | 1.0 |'
    assert b.startswith('| B | not measured: no */vis_data/scalars.json under ')
    assert train_time.COCO_1X_ITERS == 12 * 7393  # 118,287 images at 16 per iteration


def test_train_time_refuses_a_schedule_that_is_no_number(capsys):
    with pytest.raises(SystemExit):
        train_time.main(['--run', 'A', 'somewhere', '1x'])
    assert "SCHEDULE_ITERS of A must be a whole number, got '1x'" in capsys.readouterr().err
