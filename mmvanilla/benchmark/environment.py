"""The machine a benchmark runs on: the device check and the facts printed with the results."""
from __future__ import annotations

import os
import platform

import torch

__all__ = ['available_cores', 'check_device', 'cpu_name', 'environment']


def check_device(device: str) -> torch.device:
    """The device to benchmark on; refuses a GPU that is not there with a message saying so."""
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda asked for, but PyTorch sees no CUDA GPU here (torch.cuda.is_available() '
                           f'is False; torch {torch.__version__}, built with CUDA {torch.version.cuda}). Run on a '
                           'machine with an NVIDIA GPU and a CUDA build of PyTorch, or use --device cpu.')
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'unsupported device {device}: use cpu or cuda')
    return device


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def environment(device: torch.device, threads: int) -> dict:
    """Machine and library facts printed with the results."""
    import mmdet
    env = dict(cpu=cpu_name(), cores=available_cores(), threads=threads, device=str(device),
               torch=torch.__version__, mmdet=mmdet.__version__, python=platform.python_version(),
               dtype='float32')
    if device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   tf32=False)  # run_benchmark turns TF32 off: these are fp32 numbers
    try:
        import onnxruntime
        env['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    return env
