"""``torch.load`` of tensors and training state only, on every torch mmvanilla supports.

torch >= 2.4 has a ``weights_only`` loader whose allowlist can be extended (``torch.serialization.add_safe_globals``);
it is asked for explicitly, since torch < 2.6 loads with ``weights_only=False`` by default. An older torch's
``weights_only`` loader takes a fixed list, which refuses mmengine's runner checkpoints (they hold a
``HistoryBuffer``); there the file is read by an unpickler that resolves only the globals torch's own list allows
and the extra ones given, the restriction Python's pickle documentation describes ("Restricting Globals"), through
every entry point torch may call (``Unpickler``, ``load``, ``loads``). Either way a file that pickles anything else
(a call of ``os.system``) is refused with ``pickle.UnpicklingError``, whose message names it as torch's does
(``GLOBAL module.name``).

Before either loader runs, on every torch, the file itself is checked (:func:`check_checkpoint_file`): only torch's
zip format is read. A file in torch's legacy format is unpickled by torch before any check of what it holds, and a
TorchScript archive is handed to ``torch.jit.load``, which runs its code: both are refused by their type. The pickle
inside a zip is scanned without running it (``pickletools``): one whose objects, with its shared references
followed, number more than :data:`MAX_OBJECTS`, or nest deeper than :data:`MAX_DEPTH`, is refused, since hashing or
walking it would keep the loader busy for hours (a tuple of two references to one tuple, repeated 100 times, is
under 2 KB of pickle and 2**100 objects) or overflow its stack.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import io
import os
import pickle
import pickletools
import types
from collections.abc import Iterable

import torch

__all__ = ['ALLOWLIST_EXTENSIBLE', 'MAX_DEPTH', 'MAX_OBJECTS', 'RefusedCheckpoint', 'check_checkpoint_file',
           'load_weights_only']

#: Whether this torch's ``weights_only`` loader takes extra globals (torch >= 2.4).
ALLOWLIST_EXTENSIBLE = hasattr(torch.serialization, 'add_safe_globals')

#: The most objects a checkpoint's pickle may make, its shared references followed, and the most its unpickler may
#: hash or pass to calls. A runner checkpoint of Mask R-CNN with VanillaNet-13 (weights, EMA weights, AdamW state,
#: message hub) makes about 30,000; 10**8 nested tuples take about a second to hash.
MAX_OBJECTS = 10**8

#: The deepest a checkpoint's pickle may nest objects (that runner checkpoint: 10). torch.save's pickler stops at
#: Python's recursion limit, 1000 by default.
MAX_DEPTH = 1000

_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTO = 0x80


class RefusedCheckpoint(pickle.UnpicklingError):
    """A file :func:`load_weights_only` refuses before unpickling anything; the message names the file, the cause
    and what to do."""


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


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Refuses, before anything in it is unpickled, a file that loading could make run code or hang: one that is not
    in torch's zip format (the legacy format, or no checkpoint at all), a TorchScript archive, or one whose pickle is
    too large once its shared references are followed, or too deep (:data:`MAX_OBJECTS`, :data:`MAX_DEPTH`).

    Raises:
        RefusedCheckpoint: one of these; the message names the file, the cause and what to do.
        OSError, RuntimeError: the file cannot be read, or torch cannot read it as a zip archive.
    """
    path = os.fspath(path)
    with open(path, 'rb') as f:
        start = f.read(4)
        if start != _ZIP_MAGIC:
            if len(start) >= 2 and start[0] == _PICKLE_PROTO and 2 <= start[1] <= pickle.HIGHEST_PROTOCOL:
                raise RefusedCheckpoint(
                    f'refused to load checkpoint {path}: it is in torch\'s legacy format (written by torch < 1.6 or '
                    'with _use_new_zipfile_serialization=False), which is unpickled before anything in it can be '
                    'checked. Re-save it with torch.save on a current torch after loading it only if you trust it')
            raise RefusedCheckpoint(f'{path} is not a PyTorch checkpoint (not a zip archive, as torch.save writes)')
        f.seek(0)
        reader = torch._C.PyTorchFileReader(f)  # the reader torch.load uses: it sees the records torch will read
        records = reader.get_all_records()
        if 'constants.pkl' in records or any(name.startswith('code/') for name in records):
            raise RefusedCheckpoint(
                f'refused to load checkpoint {path}: it is a TorchScript archive (torch.jit.save), not a checkpoint: '
                'loading it runs its code. Load it with torch.jit.load only if you trust it')
        data = reader.get_record('data.pkl') if 'data.pkl' in records else None
    if data is not None:
        _check_pickle_size(bytes(data), path)


def _check_pickle_size(data: bytes, path: str) -> None:
    try:
        children, walked = _pickle_graph(data)
    except IndexError:
        raise RefusedCheckpoint(f'{path} is not a PyTorch checkpoint (unreadable pickle: stack underflow)') from None
    except ValueError as e:
        raise RefusedCheckpoint(f'{path} is not a PyTorch checkpoint (unreadable pickle: {e})') from None
    size, depth = _expanded(children)
    if max(depth, default=0) > MAX_DEPTH:
        raise RefusedCheckpoint(
            f'refused to load checkpoint {path}: its pickle nests objects more than {MAX_DEPTH} levels deep, '
            'deeper than torch.save writes by default; unpickling it could crash. Do not load this file')
    if max(size, default=0) > MAX_OBJECTS or sum(size[node] for node in walked) > MAX_OBJECTS:
        raise RefusedCheckpoint(
            f'refused to load checkpoint {path}: its pickle expands to more than {MAX_OBJECTS:,} objects once its '
            'shared references are followed, far more than any checkpoint holds; loading it could take hours. Do '
            'not load this file')


_MEMO_PUT = {'PUT', 'BINPUT', 'LONG_BINPUT'}
_MEMO_GET = {'GET', 'BINGET', 'LONG_BINGET'}
_IN_PLACE = {'APPEND', 'APPENDS', 'SETITEM', 'SETITEMS', 'ADDITEMS', 'BUILD'}
_CALLS = {'REDUCE', 'NEWOBJ', 'NEWOBJ_EX', 'OBJ', 'INST'}


def _pickle_graph(data: bytes) -> tuple[list[list[int]], list[int]]:
    """The objects a pickle makes, as nodes with the nodes each holds (``children``), and the nodes its unpickler
    hashes (dict keys, set items) or passes to a call (``walked``); found from its opcodes without running any."""
    children: list[list[int]] = []
    walked: list[int] = []
    stack: list[int] = []
    marks: list[int] = []  # where each open mark is on the stack
    memo: dict = {}
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name == 'MARK':
            marks.append(len(stack))
        elif name in _MEMO_PUT or name == 'MEMOIZE':
            memo[len(memo) if name == 'MEMOIZE' else arg] = stack[-1]
        elif name in _MEMO_GET:
            if arg not in memo:
                raise ValueError(f'{name} {arg} before that memo entry is written')
            stack.append(memo[arg])
        elif name == 'DUP':
            stack.append(stack[-1])
        elif name == 'POP' and marks and marks[-1] == len(stack):
            marks.pop()  # as pickle does: POP with nothing above the last mark drops the mark
        elif name == 'POP':
            stack.pop()
        elif name not in ('PROTO', 'FRAME', 'STOP'):
            popped = _pop(stack, marks, opcode.stack_before)
            if name in ('SETITEM', 'SETITEMS'):
                walked += popped[1::2]
            elif name == 'DICT':
                walked += popped[0::2]
            elif name in ('ADDITEMS', 'BUILD'):
                walked += popped[1:]
            elif name == 'FROZENSET' or name in _CALLS:
                walked += popped
            if name in _IN_PLACE:
                children[popped[0]].extend(popped[1:])
                stack.append(popped[0])
            else:
                for _ in opcode.stack_after:
                    children.append(popped)
                    stack.append(len(children) - 1)
    return children, walked


def _pop(stack: list[int], marks: list[int], before: list) -> list[int]:
    """Pops what an opcode takes (``stack_before``; a mark takes all above the last mark) and returns it."""
    popped = []
    below = len(before)
    if pickletools.markobject in before:
        mark = marks.pop()  # IndexError if there is none
        popped = stack[mark:]
        del stack[mark:]
        below = before.index(pickletools.markobject)
    if below > len(stack) - (marks[-1] if marks else 0):
        raise ValueError('stack underflow')
    if below:
        popped = stack[-below:] + popped
        del stack[-below:]
    return popped


def _expanded(children: list[list[int]]) -> tuple[list[int], list[int]]:
    """Each node's size (the objects it makes with shared references followed; counted up to one past
    :data:`MAX_OBJECTS`) and depth; a reference back into a cycle counts as one object."""
    count = len(children)
    size, depth, state = [0] * count, [0] * count, [0] * count  # state: 0 unseen, 1 being expanded, 2 done
    for root in range(count):
        if state[root]:
            continue
        state[root] = 1
        todo = [(root, iter(children[root]))]
        while todo:
            node, pending = todo[-1]
            for child in pending:
                if not state[child]:
                    state[child] = 1
                    todo.append((child, iter(children[child])))
                    break
            else:
                todo.pop()
                done = [child for child in children[node] if state[child] == 2]
                size[node] = min(MAX_OBJECTS + 1, 1 + len(children[node]) - len(done) + sum(size[c] for c in done))
                depth[node] = 1 + max((depth[c] for c in done), default=0)
                state[node] = 2
    return size, depth


def load_weights_only(path: str | os.PathLike, extra_globals: Iterable = ()) -> object:
    """``torch.load(path, map_location='cpu')`` that unpickles only tensors, torch's safe types and
    ``extra_globals`` (objects, or ``(object, 'module.name')`` pairs, as ``add_safe_globals`` takes them), from
    files that :func:`check_checkpoint_file` lets through.

    Raises:
        RefusedCheckpoint: refused by :func:`check_checkpoint_file` (legacy format, TorchScript, too large or deep).
        pickle.UnpicklingError: the file pickles another global; the message names it (``GLOBAL module.name``).
    """
    check_checkpoint_file(path)
    if ALLOWLIST_EXTENSIBLE:
        torch.serialization.add_safe_globals(list(extra_globals))  # idempotent
        return torch.load(path, map_location='cpu', weights_only=True)
    return torch.load(path, map_location='cpu', weights_only=False,
                      pickle_module=_restricted_pickle_module(extra_globals))
