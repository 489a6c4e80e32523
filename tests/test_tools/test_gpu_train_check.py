"""tools/analysis/gpu_train_check.sh rehearsed on CPU: set-up skipped where all is installed, and
a clear usage message for an unknown stage."""
import subprocess
import sys

from conftest import REPO, tool_env


def run_train_check(tmp_path, *args):
    return subprocess.run(['bash', 'tools/analysis/gpu_train_check.sh', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(tool_env(), PYTHON=sys.executable, OUT=str(tmp_path),
                                   BUNDLE=str(tmp_path / 'no_bundle')))


def test_gpu_train_check_skips_what_is_installed_and_refuses_unknown_stages(tmp_path):
    # everything importable here: no bundle needed, no build; `build` stops after that
    proc = run_train_check(tmp_path, 'build')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'set-up:' in proc.stdout and 'building mmcv' not in proc.stdout
    assert (tmp_path / 'gpu_train').is_dir()
    proc = run_train_check(tmp_path, 'sideways')
    assert proc.returncode == 2 and 'usage: ' in proc.stderr and '[build|train|all]' in proc.stderr
