"""What the benchmark tools share: input sizes on their command lines and the name of the
device they time on (printed beside every table, as timings mean nothing without it)."""
import platform
import subprocess
from typing import Tuple, Union

import torch


def parse_size(text: str) -> Tuple[int, int]:
    """An input size of the command line: ``HxW`` (e.g. ``800x1216``) or ``S`` for S x S.

    Args:
        text (str): The size as typed.

    Raises:
        ValueError: not one or two positive integers (argparse reports it as a bad value).
    """
    h, _, w = text.lower().partition('x')
    size = int(h), int(w or h)
    if min(size) <= 0:
        raise ValueError(f'sizes are positive, got {text!r}')
    return size


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
