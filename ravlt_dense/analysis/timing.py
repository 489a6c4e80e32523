"""What the benchmark tools share: the name of the device they time on (printed beside every
table, as timings mean nothing without it), autocast by dtype name, peak CUDA memory of a call,
and timing a call to its end on the device."""
import platform
import statistics
import subprocess
import time
from typing import Callable, Union

import torch


def cpu_model() -> str:
    """The CPU's model name (``lscpu``), else what ``platform`` knows of it."""
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith('model name'):
                return line.split(':', 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def device_name(device: Union[str, torch.device]) -> str:
    """``cuda:<GPU name>`` or ``cpu:<CPU model> xN threads`` (the threads torch uses).

    Args:
        device (str | torch.device): The device the timings ran on.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        return f'cuda:{torch.cuda.get_device_name(device)}'
    return f'cpu:{cpu_model()} x{torch.get_num_threads()} threads'


def synchronize(device: Union[str, torch.device]) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously: a timer stopped
    without this measures the kernel launches, not the kernels)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def cuda_peak_mb(fn: Callable[[], object], device: Union[str, torch.device]) -> float:
    """MB that one call of ``fn`` held at its peak on the CUDA ``device``, over what was
    allocated before it (``torch.cuda.max_memory_allocated``)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def autocast(device: Union[str, torch.device], dtype: str) -> torch.autocast:
    """Autocast on ``device`` to ``dtype`` ('float16', 'bfloat16'); 'float32' turns it off.

    Args:
        device (str | torch.device): Where the model runs.
        dtype (str): The name of the torch dtype.
    """
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype),
                          enabled=dtype != 'float32')


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 1,
                   device: Union[str, torch.device] = 'cpu') -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls after ``warmup`` untimed ones, each
    timed until ``device`` has finished it.

    Args:
        fn (Callable): The work to time.
        repeat (int): Timed calls.
        warmup (int): Untimed calls first.
        device (str | torch.device): The device ``fn`` runs on.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
