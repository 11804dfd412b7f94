"""Writing a tool's output safely: checked before the work starts, never over an input, written whole or not at all.

:func:`check_output` refuses, with one line that says what to do, an output that is a folder, lies in a folder that
does not exist or cannot be written, already exists (unless ``force``), or is one of the inputs (even with
``force``: a conversion written over its own input would lose the training checkpoint). :func:`atomic_output`
writes to a temporary name beside the output and renames it into place only when the writing has finished, so an
interrupted or failed write leaves the old file (or none), never half a file.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Iterable, Iterator

__all__ = ['atomic_output', 'check_output']


def _same_file(a: str, b: str) -> bool:
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)
    return osp.realpath(a) == osp.realpath(b)


def check_output(path: str | os.PathLike, force: bool = False, inputs: Iterable[str | os.PathLike] = (),
                 what: str = 'output') -> str:
    """Checks that ``path`` can be written, before any work is done; returns it as a string.

    Args:
        path (str | os.PathLike): The file to write.
        force (bool): Allow replacing an existing file (never an input). Defaults to False.
        inputs (Iterable): Files the work reads: the output may not be any of them. Defaults to ().
        what (str): What the output is, for the messages (e.g. ``'deploy checkpoint'``). Defaults to ``'output'``.

    Returns:
        str: ``path``.

    Raises:
        ValueError: the output is an input, a folder, or exists (without ``force``).
        FileNotFoundError: its folder does not exist.
        PermissionError: its folder cannot be written.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), 'new_file.pth')
        >>> check_output(path) == path
        True
    """
    path = os.fspath(path)
    for source in inputs:
        if source is not None and _same_file(path, os.fspath(source)):
            raise ValueError(f'{what} {path} is the input {os.fspath(source)}: writing there would replace the input '
                             '(for a training checkpoint: its optimizer state and EMA weights); give another path')
    if osp.isdir(path):
        raise ValueError(f'{what} {path} is a folder: give a file name, e.g. {osp.join(path, "out" + _ext(what))}')
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise FileNotFoundError(f'folder {folder} of the {what} {path} does not exist: create it (mkdir -p {folder}) '
                                'or give another path')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f'cannot write the {what} {path}: no write permission in {folder}; give another path')
    if osp.lexists(path) and not force:
        raise ValueError(f'{what} {path} exists: pass --force to replace it, or give another path')
    return path


def _ext(what: str) -> str:
    return '.onnx' if 'onnx' in what.lower() else '.json' if 'json' in what.lower() else '.pth'


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path to write ``path``'s content to; renames it to ``path`` when the block succeeds.

    The temporary file lies in a private folder beside ``path`` under ``path``'s own name, so a writer that adds
    companion files named after it (ONNX's ``FILE.data`` for weights over 2 GB) moves them too. On any exception,
    KeyboardInterrupt included, the temporary files are removed and ``path`` is left as it was.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + '/result.txt'
        >>> with atomic_output(path) as tmp:
        ...     with open(tmp, 'w') as f:
        ...         _ = f.write('whole or nothing')
        >>> open(path).read()
        'whole or nothing'
    """
    path = osp.abspath(os.fspath(path))
    folder = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.partial-', dir=osp.dirname(path))
    try:
        tmp = osp.join(folder, osp.basename(path))
        yield tmp
        # Companions (FILE.data) first: FILE, once it appears, finds them.
        for name in sorted(os.listdir(folder), reverse=True):
            os.replace(osp.join(folder, name), osp.join(osp.dirname(path), name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
