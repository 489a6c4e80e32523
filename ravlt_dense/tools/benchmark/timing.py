"""The clocks and gauges of a measurement: the machine's name, waiting for the device, autocast,
the peak memory of one call, wall times of calls timed in turn and their statistics. Shared by
the benchmark's cases (``case``), tools/analysis/profile_backbone.py and
tools/analysis/accuracy_cost.py."""
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple

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


def device_name(device: torch.device) -> str:
    """``cuda:<GPU name>`` or ``cpu:<CPU model> xN threads`` (the threads torch uses): printed
    beside every timing, which means nothing without it."""
    if device.type == 'cuda':
        return f'cuda:{torch.cuda.get_device_name(device)}'
    return f'cpu:{cpu_model()} x{torch.get_num_threads()} threads'


def synchronize(device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously: a timer stopped
    without this measures the kernel launches, not the kernels)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def autocast(device, dtype: str) -> torch.autocast:
    """Autocast on ``device`` to ``dtype`` ('float16', 'bfloat16'); 'float32' turns it off."""
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype),
                          enabled=dtype != 'float32')


def _proc_status(field: str) -> Optional[int]:
    """VmRSS / VmHWM of this process in bytes (Linux)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(fn: Callable[[], object], device: torch.device) -> Tuple[float, str]:
    """(MB, how measured) that one call of ``fn`` held at its peak over what was held before."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return peak / 2**20, 'cuda max_memory_allocated delta'
    try:  # reset the kernel's RSS high-water mark (VmHWM) to now (Linux >= 4.0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        base = _proc_status('VmRSS')  # after the reset: the mark is at least this from now on
    except OSError:
        base = None
    if base is not None:
        fn()
        # the kernel's RSS counters lag by a few hundred kB: a call that allocated nothing can
        # read slightly below zero
        return max(_proc_status('VmHWM') - base, 0) / 2**20, 'RSS peak delta (VmHWM)'
    import resource  # ru_maxrss never goes down: a lower bound if the build peaked higher
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (after - before) / 2**20, 'ru_maxrss delta (lower bound)'


def interleaved_seconds(calls: Dict[str, Callable[[], object]], repeat: int,
                        device: torch.device) -> Dict[str, List[float]]:
    """Sorted wall times of ``repeat`` calls of each, in turn (noise hits all alike), each timed
    until the device has finished it."""
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(ts) for name, ts in times.items()}


def latency_stats(ts: List[float], batch: int) -> dict:
    """The row's latency columns from sorted wall times ``ts`` (s) of passes of ``batch``
    images: median, quartiles, min, max (ms), images/s and the number of passes."""
    q = statistics.quantiles(ts, n=4, method='inclusive') if len(ts) > 1 else ts * 3
    median = statistics.median(ts)
    return dict(latency_ms=median * 1e3, latency_q1_ms=q[0] * 1e3, latency_q3_ms=q[2] * 1e3,
                latency_min_ms=ts[0] * 1e3, latency_max_ms=ts[-1] * 1e3,
                images_per_s=batch / median, repeat=len(ts))
