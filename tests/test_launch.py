"""ravlt_dense.tools.launch: srun's variables become torch's rendezvous, and the process group is
closed at the end of a run (the launchers themselves: tests/test_tools/test_launchers.py)."""
import os

import pytest
import torch.distributed as dist

from ravlt_dense.tools.launch import export_slurm_env, finish_distributed, first_slurm_host


def test_slurm_env_becomes_torch_rendezvous(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        # set, then deleted: monkeypatch records the variable and removes what export_slurm_env
        # writes at teardown (a leaked RANK/MASTER_ADDR hangs later torchrun tests)
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)
    monkeypatch.setenv('PATH', '/nonexistent')  # no scontrol: the list is read directly
    for key, value in dict(SLURM_PROCID='5', SLURM_NTASKS='16', SLURM_LOCALID='1',
                           SLURM_NODELIST='gpu[03-04,9],cpu1').items():
        monkeypatch.setenv(key, value)
    export_slurm_env()
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                                        'MASTER_PORT')} == dict(
        RANK='5', WORLD_SIZE='16', LOCAL_RANK='1', MASTER_ADDR='gpu03', MASTER_PORT='29500')
    monkeypatch.setenv('MASTER_ADDR', 'head')  # the user's choice wins, as in mmengine
    export_slurm_env()
    assert os.environ['MASTER_ADDR'] == 'head'


@pytest.mark.parametrize('nodelist, first', [('node7', 'node7'), ('node7,node8', 'node7'),
                                             ('gpu[03-05,9],cpu1', 'gpu03'),
                                             ('rack[2-3]-ib,x', 'rack2-ib')])
def test_first_slurm_host_without_scontrol(monkeypatch, nodelist, first):
    monkeypatch.setenv('PATH', '/nonexistent')
    assert first_slurm_host(nodelist) == first


def test_slurm_variables_do_not_outlive_the_test():
    # the test above ran first (file order) and must leave none of its rendezvous values behind
    written = dict(RANK='5', WORLD_SIZE='16', LOCAL_RANK='1', MASTER_ADDR='gpu03')
    assert not {k for k, v in written.items() if os.environ.get(k) == v}


def test_slurm_launcher_outside_srun_says_how_to_start(monkeypatch):
    monkeypatch.delenv('SLURM_PROCID', raising=False)
    with pytest.raises(RuntimeError, match=r"missing \['SLURM_PROCID'.*tools/slurm_train.sh"):
        export_slurm_env()


def test_unreadable_node_list_asks_for_master_addr(monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')
    with pytest.raises(ValueError, match=r"SLURM_NODELIST='\[1-2\]': set MASTER_ADDR"):
        first_slurm_host('[1-2]')


def test_finish_distributed_closes_the_process_group(tmp_path):
    finish_distributed()  # no group: nothing to do
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=0,
                            world_size=1)
    assert dist.is_initialized()
    finish_distributed()
    assert not dist.is_initialized()
