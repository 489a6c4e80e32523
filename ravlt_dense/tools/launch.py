"""Distributed runs on machines without CUDA (torchrun or srun), with mmengine's own runner.

mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper passes
``device_ids=[rank]``, both of which fail without CUDA. Initialising the gloo group first (the
Runner then skips ``init_dist``) and wrapping with ``device_ids=None`` (the public
``model_wrapper_cfg`` of the config) keeps mmengine's runner and wrapper unchanged.
"""
import os
import re
import subprocess

import torch
import torch.distributed as dist
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start the gloo process group for ``--launcher pytorch`` (torchrun) and ``--launcher
    slurm`` (srun) runs on machines without CUDA; with CUDA mmengine's ``init_dist`` does it."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher == 'slurm':
        export_slurm_env()
    elif launcher != 'pytorch':
        raise ValueError(f'On a machine without CUDA only --launcher pytorch (torchrun) and '
                         f'--launcher slurm (srun) are supported, got --launcher {launcher}')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # the env:// rendezvous of torchrun / above
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def finish_distributed() -> None:
    """Close the process group of a distributed run once every rank is done (mmengine leaves
    it open): left to the interpreter's exit, gloo's threads were seen to abort a finished rank
    ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def export_slurm_env() -> None:
    """Translate srun's task variables into torch's env:// rendezvous variables, as mmengine's
    ``_init_dist_slurm`` does on GPU nodes: RANK, WORLD_SIZE and LOCAL_RANK from SLURM_PROCID,
    SLURM_NTASKS and SLURM_LOCALID; MASTER_ADDR (unless set) is the first host of the job and
    MASTER_PORT (unless set) torch's default 29500."""
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm needs the variables that srun sets, missing '
                           f'{missing}: start the job with srun (tools/slurm_train.sh), or use '
                           f'torchrun and --launcher pytorch (tools/dist_train.sh)')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = first_slurm_host(os.environ['SLURM_NODELIST'])


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[03-05,9],cpu1``: from ``scontrol show
    hostnames`` (what mmengine asks) where installed, else read from the list itself."""
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                             text=True, timeout=30)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass  # no Slurm client on this machine
    match = re.match(r'([^,\[]+)(?:\[([^\]]+)\]([^,\[]*))?', nodelist.strip())
    if match is None:
        raise ValueError(f'Cannot read the first host of SLURM_NODELIST={nodelist!r}: set '
                         f'MASTER_ADDR to the host of rank 0')
    prefix, ranges, suffix = match.groups()
    if ranges is None:
        return prefix
    return prefix + re.split(r'[-,]', ranges)[0] + suffix  # "03-05,9" -> "03": padding kept
