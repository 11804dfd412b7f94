"""The machine a benchmark runs on, and the process settings a run holds while it measures.

A run sets this process's CPU threads and, on a GPU, turns TF32 off so that its figures are fp32 ones;
:func:`run_settings` gives both back as they were when the run ends or raises.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ['available_cores', 'check_device', 'cpu_name', 'environment', 'run_settings']


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


@contextmanager
def run_settings(device: torch.device, threads: int) -> Iterator[None]:
    """Runs the block with ``threads`` CPU threads and, on a GPU, TF32 off; gives back what it changed on exit.

    On the CPU the TF32 flags are neither read nor written. torch maps ``allow_tf32`` onto the ``fp32_precision``
    flags, and a round trip of ``allow_tf32`` would leave the matmul one explicit (``ieee`` where it was ``none``,
    which defers to ``torch.set_float32_matmul_precision``), so that one is saved and restored too.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    cuda = device.type == 'cuda'
    saved = [(matmul, 'allow_tf32', matmul.allow_tf32), (cudnn, 'allow_tf32', cudnn.allow_tf32)] if cuda else []
    if cuda and hasattr(matmul, 'fp32_precision'):
        saved.append((matmul, 'fp32_precision', matmul.fp32_precision))
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        if cuda:
            matmul.allow_tf32 = False
            cudnn.allow_tf32 = False
        yield
    finally:
        torch.set_num_threads(previous_threads)
        for obj, name, value in saved:
            setattr(obj, name, value)


def environment(device: torch.device, threads: int) -> dict:
    """Machine and library facts printed with the results."""
    import mmdet
    env = dict(cpu=cpu_name(), cores=available_cores(), threads=threads, device=str(device),
               torch=torch.__version__, mmdet=mmdet.__version__, python=platform.python_version(),
               dtype='float32')
    if device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   tf32=False)  # run_settings turns TF32 off: these are fp32 numbers
    try:
        import onnxruntime
        env['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    return env
