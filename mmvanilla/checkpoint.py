"""Safe checkpoint loading on torch >= 2.6, where ``torch.load`` defaults to ``weights_only=True``.

mmengine's runner checkpoints hold a few non-tensor objects (the message hub's ``HistoryBuffer`` and the numpy
arrays and scalars inside it). Rather than turning the check off, :func:`register_safe_globals` adds exactly these
types to torch's allowlist: resume and ``load_from`` work, and a file that pickles any other callable is refused.

The paper's training script (timm / ConvNeXt style) saves its ``argparse.Namespace`` of arguments next to the weights
(``args``); a Namespace only holds attributes, each of which must itself be allowed, so it is allowed too. It is
registered under its name, ``(Namespace, 'argparse.Namespace')``: timm loads files inside
``torch.serialization.safe_globals([Namespace])``, whose exit removes a plain ``Namespace`` entry from the list.

``HistoryBuffer`` pickles its statistic methods as ``getattr(HistoryBuffer, 'min')``. Allowing ``getattr`` itself
would allow anything, so the unpickler's ``getattr`` is mapped to :func:`history_buffer_getattr`, which resolves
only those methods.
"""
from __future__ import annotations

import argparse
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_safe_globals() -> list:
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [type(np.dtype(name)) for name in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
        'float16', 'float32', 'float64')]
    return [
        # Checkpoints written under numpy 1.x name the module numpy.core.
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
        *dtype_classes,
    ]


_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` for the weights-only unpickler: resolves HistoryBuffer's statistic methods and nothing else."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: only HistoryBuffer statistics '
        f'{_HISTORY_BUFFER_STATISTICS} are allowed. Load the file with weights_only=False only if you trust it.')


def safe_globals() -> list:
    """The types allowed in checkpoints besides torch's defaults."""
    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'), (argparse.Namespace, 'argparse.Namespace'),
            *_numpy_safe_globals()]


def register_safe_globals() -> None:
    """Adds :func:`safe_globals` to torch's ``weights_only`` allowlist (idempotent)."""
    torch.serialization.add_safe_globals(safe_globals())
