"""Cluster launchers on one CPU machine: tools/slurm_train.sh through a stand-in ``srun``, and a
two-node torchrun job (tools/dist_train.sh with NNODES=2) over the loopback interface.

Each trains the quick-start Mask R-CNN for one epoch of 2 iterations (8 images of 64 px, 2 ranks x
2 images) with gloo, one OpenMP thread per rank, and no validation (test_det_tools covers a
distributed validation).
"""
import json
import os
import re
import socket
import subprocess
import sys

from conftest import QUICKSTART, REPO, metric_values, shapes_options, tool_env

# srun's stand-in: parses the options tools/slurm_*.sh pass, starts --ntasks copies of the
# command with the variables srun sets, kills the rest when one fails (--kill-on-bad-exit=1) and
# records the options and every task's exit code.
FAKE_SRUN = '''#!{python}
import json, os, subprocess, sys, time
args, opts = sys.argv[1:], {{}}
while args[0].startswith('-'):
    if args[0] == '-p':
        opts['partition'], args = args[1], args[2:]
        continue
    key, _, value = args.pop(0).lstrip('-').partition('=')
    opts[key] = value
ntasks, per_node = int(opts['ntasks']), int(opts['ntasks-per-node'])
procs = [subprocess.Popen(args, env=dict(
    os.environ, SLURM_PROCID=str(rank), SLURM_NTASKS=str(ntasks),
    SLURM_LOCALID=str(rank % per_node), SLURM_NODEID=str(rank // per_node),
    SLURM_NODELIST='localhost', SLURM_JOB_NAME=opts['job-name'])) for rank in range(ntasks)]
while any(p.poll() is None for p in procs):
    if any(p.poll() for p in procs):
        for p in procs:
            p.kill()
    time.sleep(0.2)
codes = [p.wait() for p in procs]
json.dump(dict(opts=opts, command=args, codes=codes), open(os.environ['SRUN_RECORD'], 'w'))
sys.exit(max(codes, key=abs))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def one_epoch_options(shapes_root):  # noqa: F811
    return [*shapes_options(shapes_root), 'train_cfg.max_epochs=1', 'train_cfg.val_interval=2']


def assert_trained_once(log, work_dir):
    """Two ranks trained both iterations of the epoch and rank 0 alone saved the checkpoint."""
    assert 'Distributed training: True' in log
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\]', log), log[-3000:]
    assert len(re.findall(r'Saving checkpoint at 1 epochs', log)) == 1
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_1.pth']
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')


def fake_srun_env(tmp_path, record):
    """The tools' environment with the stand-in srun first on PATH and 2 tasks on one node."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(0o755)
    env = dict(tool_env(), GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1',
               MASTER_PORT=str(free_port()), SRUN_RECORD=str(record))
    env['PATH'] = f'{bin_dir}{os.pathsep}{env["PATH"]}'
    env.pop('MASTER_ADDR', None)
    return env


def test_slurm_train_and_test_through_srun(shapes, tmp_path):  # noqa: F811
    work_dir, record = tmp_path / 'work', tmp_path / 'srun.json'
    proc = subprocess.run(
        ['bash', 'tools/slurm_train.sh', 'cpu', 'ravlt-test', QUICKSTART, str(work_dir),
         '--auto-scale-lr', '--cfg-options', *one_epoch_options(shapes),
         'auto_scale_lr.base_batch_size=16'],
        cwd=REPO, env=fake_srun_env(tmp_path, record), capture_output=True, text=True,
        timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    srun_call = json.loads(record.read_text())
    assert srun_call['codes'] == [0, 0]  # both ranks finished
    assert srun_call['opts'] == {'partition': 'cpu', 'job-name': 'ravlt-test', 'gres': 'gpu:2',
                                 'ntasks': '2', 'ntasks-per-node': '2', 'cpus-per-task': '1',
                                 'kill-on-bad-exit': '1'}
    assert {f'--work-dir={work_dir}', '--launcher=slurm'} <= set(srun_call['command'])
    assert 'Distributed launcher: slurm' in log
    # 2 tasks x 2 images against the 16 the lr was set for
    assert 'the current batch size is 4. Scaling the original LR by 0.25' in log
    assert_trained_once(log, work_dir)

    # evaluation of that checkpoint, the 4 validation images split over the two tasks
    proc = subprocess.run(
        ['bash', 'tools/slurm_test.sh', 'cpu', 'ravlt-test', QUICKSTART,
         str(work_dir / 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test'),
         '--cfg-options', *shapes_options(shapes)],
        cwd=REPO, env=fake_srun_env(tmp_path, record), capture_output=True, text=True,
        timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert json.loads(record.read_text())['codes'] == [0, 0]
    assert 'Distributed launcher: slurm' in log
    # 4 images, 2 per batch: one iteration per task (a single process would run [2/2])
    assert re.search(r'Epoch\(test\) \[1/1\]', log), log[-3000:]
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metric_values(log))


def run_two_nodes(shapes, work_dir):
    """Start node 0 and node 1 of a 2-node torchrun job on loopback; their exit codes and logs."""
    cmd = ['bash', 'tools/dist_train.sh', QUICKSTART, '1', '--work-dir', str(work_dir),
           '--cfg-options', *one_epoch_options(shapes)]
    port = free_port()
    nodes = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(tool_env(), NNODES='2', NODE_RANK=str(rank),
                                                  MASTER_ADDR='127.0.0.1', PORT=str(port)))
             for rank in (0, 1)]
    try:
        logs = [node.communicate(timeout=400)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    return [node.returncode for node in nodes], logs


def test_two_node_torchrun_on_one_machine(shapes, tmp_path):
    codes, logs = run_two_nodes(shapes, tmp_path / 'work')
    if codes != [0, 0] and any('SIGABRT' in log for log in logs):
        # Seen once in the whole suite on 2 loaded cores (not reproduced in 7 runs alone): a
        # worker aborted inside c10d at start-up. One more try on a fresh port and work dir;
        # a real failure fails twice.
        print('first two-node run aborted (SIGABRT); node 0 log:\n' + logs[0][-3000:])
        codes, logs = run_two_nodes(shapes, tmp_path / 'work_retry')
        work_dir = tmp_path / 'work_retry'
    else:
        work_dir = tmp_path / 'work'
    assert codes == [0, 0], '\n'.join(f'--- node {i} ---\n{log[-3000:]}'
                                       for i, log in enumerate(logs))
    assert 'Distributed launcher: pytorch' in logs[0]
    assert_trained_once(logs[0], work_dir)
    assert 'Saving checkpoint' not in logs[1]  # the second node's rank does not write
