"""``torch.load`` of tensors and training state only, on every torch mmvanilla supports.

torch >= 2.4 has a ``weights_only`` loader whose allowlist can be extended (``torch.serialization.add_safe_globals``);
it is asked for explicitly, since torch < 2.6 loads with ``weights_only=False`` by default. An older torch's
``weights_only`` loader takes a fixed list, which refuses mmengine's runner checkpoints (they hold a
``HistoryBuffer``); there the file is read by an unpickler that resolves only the globals torch's own list allows
and the extra ones given, the restriction Python's pickle documentation describes ("Restricting Globals"), through
every entry point torch may call (``Unpickler``, ``load``, ``loads``). Either way a file that pickles anything else
(a call of ``os.system``) is refused with ``pickle.UnpicklingError``, whose message names it as torch's does
(``GLOBAL module.name``).
"""
from __future__ import annotations

import _compat_pickle
import codecs
import io
import os
import pickle
import types
from collections.abc import Iterable

import torch

__all__ = ['ALLOWLIST_EXTENSIBLE', 'load_weights_only']

#: Whether this torch's ``weights_only`` loader takes extra globals (torch >= 2.4).
ALLOWLIST_EXTENSIBLE = hasattr(torch.serialization, 'add_safe_globals')


def _qualified(entry) -> tuple[str, object]:
    obj, name = entry if isinstance(entry, tuple) else (entry, f'{entry.__module__}.{entry.__qualname__}')
    return name, obj


def _latin1_encode(text: str, encoding: str) -> bytes:
    if encoding != 'latin1':
        raise pickle.UnpicklingError(f'refusing _codecs.encode(..., {encoding!r}) in a checkpoint: only latin1')
    return codecs.encode(text, 'latin1')


def _restricted_pickle_module(extra_globals: Iterable) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose ``Unpickler``, ``load`` and ``loads`` resolve only allowed
    globals."""
    from torch._weights_only_unpickler import _get_allowed_globals
    allowed = dict(_get_allowed_globals())
    allowed['_codecs.encode'] = _latin1_encode  # bytes in protocol 2 (numpy arrays): text to latin-1, nothing else
    allowed.update(_qualified(entry) for entry in extra_globals)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            # Protocol 2 names Python 2's modules (__builtin__.getattr), which pickle maps to Python 3's.
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            found = allowed.get(f'{module}.{name}')
            if found is None:
                raise pickle.UnpicklingError(f'Unsupported global: GLOBAL {module}.{name} is not allowed in a '
                                             'checkpoint')
            return found

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    def loads(data, /, **kwargs):
        return Unpickler(io.BytesIO(data), **kwargs).load()

    module = types.ModuleType('mmvanilla_restricted_pickle')
    module.__dict__.update(Unpickler=Unpickler, load=load, loads=loads, UnpicklingError=pickle.UnpicklingError)
    return module


def load_weights_only(path: str | os.PathLike, extra_globals: Iterable = ()) -> object:
    """``torch.load(path, map_location='cpu')`` that unpickles only tensors, torch's safe types and
    ``extra_globals`` (objects, or ``(object, 'module.name')`` pairs, as ``add_safe_globals`` takes them).

    Raises:
        pickle.UnpicklingError: the file pickles another global; the message names it (``GLOBAL module.name``).
    """
    if ALLOWLIST_EXTENSIBLE:
        torch.serialization.add_safe_globals(list(extra_globals))  # idempotent
        return torch.load(path, map_location='cpu', weights_only=True)
    return torch.load(path, map_location='cpu', weights_only=False,
                      pickle_module=_restricted_pickle_module(extra_globals))
