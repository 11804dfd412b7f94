"""Peak memory of one inference above the loaded model and input.

On the CPU in a fresh (spawned) process, so that nothing measured before leaves its pages behind: the growth of the
resident set during its first inference (Linux ``VmHWM`` after ``clear_refs``); on a GPU
``torch.cuda.max_memory_allocated`` in this process.
"""
from __future__ import annotations

import gc
import multiprocessing
import resource
from collections.abc import Callable, Iterable, Sequence

import torch

from .models import ModelSpec, build_benchmark_model, inference_fn, make_inputs

__all__ = ['kept_for_backward_mb', 'peak_memory']

MEMORY_METHOD_CPU = ('growth of the resident set of a fresh process during its first inference (Linux VmHWM '
                     'after clear_refs), above the model and input already loaded: activations, workspaces and '
                     'one-time buffers such as prepacked weights; a warmed-up allocator would hide reused pages')
MEMORY_METHOD_CPU_FALLBACK = ('growth of the peak resident set (ru_maxrss) of a fresh process during its first '
                              'inference, above the model and input already loaded')
MEMORY_METHOD_CUDA = 'torch.cuda.max_memory_allocated during one warmed-up inference, above the model and input'


def _read_status_kb(field_name: str) -> int | None:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field_name + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current resident size (Linux >= 4.0)
        return True
    except OSError:
        return False


def _cpu_peak_memory_child(spec: ModelSpec, batch: int, size: Sequence[int], threads: int) -> dict:
    """Runs in a fresh process: peak resident growth (MB) during its first inference."""
    import mmvanilla  # noqa: F401  (registers the models in a spawned process)
    torch.set_num_threads(threads)
    with torch.inference_mode():
        model = build_benchmark_model(spec)
        run = inference_fn(spec, model, make_inputs(spec, batch, size))
        gc.collect()
        rss_kb = _read_status_kb('VmRSS')
        if rss_kb is not None and _reset_peak_rss():
            run()
            peak_kb, method = _read_status_kb('VmHWM'), MEMORY_METHOD_CPU
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            run()
            rss_kb, peak_kb = before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = MEMORY_METHOD_CPU_FALLBACK
    return dict(peak_mb=max(peak_kb - rss_kb, 0) / 1024, loaded_mb=rss_kb / 1024, method=method)


def peak_memory(spec: ModelSpec, batch: int, size: Sequence[int], device: torch.device | str = 'cpu',
                threads: int = 1) -> dict:
    """Peak memory of one inference of ``spec`` above the loaded model and input.

    On the CPU it runs in a fresh process (a spawned child), so that nothing measured before leaves its pages behind;
    on a GPU it reads ``torch.cuda.max_memory_allocated`` in this process.

    Returns:
        dict: ``peak_mb``, ``loaded_mb`` (the model and input) and ``method`` (what was measured).
    """
    device = torch.device(device)
    if device.type == 'cpu':
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(1) as pool:
            return pool.apply(_cpu_peak_memory_child, (spec, batch, tuple(size), threads))
    with torch.inference_mode():
        model = build_benchmark_model(spec, device)
        run = inference_fn(spec, model, make_inputs(spec, batch, size, device))
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    del model, run
    torch.cuda.empty_cache()
    return dict(peak_mb=(peak - base) / 2**20, loaded_mb=base / 2**20, method=MEMORY_METHOD_CUDA)


def kept_for_backward_mb(forward: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> float:
    """Megabytes that autograd keeps for the backward pass while ``forward()`` runs: the activations of a training
    step, each storage counted once, those of ``exclude`` (the model's parameters) not at all.

    It counts what the graph holds, not what the allocator did, so it is the same on every device and machine (a
    GPU run of the series activation's Triton kernel keeps its input where the CPU keeps the ReLU's output: one
    tensor either way). Activation checkpointing (``torch.utils.checkpoint``, non-reentrant) holds its inputs
    outside autograd's saved tensors: they are not counted.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    kept = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = forward()  # held until every storage is counted: none is freed and reused meanwhile
    del out
    return sum(kept.values()) / 2**20
