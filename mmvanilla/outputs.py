"""Writing a tool's output safely: checked before the work starts, never over an input, written whole or not at all.

:func:`check_output` refuses, with one line that says what to do, an output that is a folder, lies in a folder that
does not exist or cannot be written, already exists (unless ``force``), or is one of the inputs (even with
``force``: a conversion written over its own input would lose the training checkpoint). :func:`atomic_output`
writes to a temporary name beside the output and renames it into place only when the writing has finished, so an
interrupted or failed write leaves the old file (or none), never half a file. A disk that fills up on the way is
named with the file. The temporary folder carries the writer's process id: one left by a writer that was killed
outright (``kill -9``, a lost node) is found by :func:`remove_stale_partials`, which ``atomic_output`` calls for its
own file and training calls for its whole work dir.
"""
from __future__ import annotations

import contextlib
import errno
import os
import os.path as osp
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from mmengine.logging import MMLogger

__all__ = ['atomic_output', 'check_output', 'describe_missing', 'remove_stale_partials']

# .NAME.partial-PID-RANDOM: the folder atomic_output writes NAME in (PID missing in folders of older versions).
_PARTIAL = re.compile(r'^\.(?P<name>.+)\.partial-(?:(?P<pid>\d+)-)?[^-]+$')


def describe_missing(path: str | os.PathLike, what: str = 'file') -> str:
    """Why an input ``path`` cannot be opened, in one line: not found, a folder, a symbolic link that loops or
    points nowhere.

    Example:
        >>> describe_missing('/no/such/config.py', 'config file')
        'config file /no/such/config.py not found'
    """
    path = os.fspath(path)
    if osp.isdir(path):
        return f'{what} {path} is a folder: give the file in it'
    if osp.islink(path):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return (f'{what} {path} is a symbolic link that loops (too many levels of symbolic links): point it '
                        'at the real file')
        return f'{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist: point it at the file'
    return f'{what} {path} not found'


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
    remove_stale_partials(osp.dirname(path), osp.basename(path))
    try:
        folder = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.partial-{os.getpid()}-', dir=osp.dirname(path))
    except OSError as e:
        raise _explained(e, path) from None
    try:
        tmp = osp.join(folder, osp.basename(path))
        try:
            yield tmp
            # Companions (FILE.data) first: FILE, once it appears, finds them.
            for name in sorted(os.listdir(folder), reverse=True):
                os.replace(osp.join(folder, name), osp.join(osp.dirname(path), name))
        except OSError as e:
            raise _explained(e, path) from None
    finally:
        try:
            shutil.rmtree(folder, ignore_errors=True)
        except KeyboardInterrupt:  # Ctrl-C while cleaning up (just after the rename): clean up, then stop
            shutil.rmtree(folder, ignore_errors=True)
            raise


def _explained(error: OSError, path: str) -> OSError:
    """``error`` with the file it was writing and the fix, where a full disk or quota is the cause."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = osp.dirname(path)
        free = shutil.disk_usage(folder).free if osp.isdir(folder) else 0
        explained = OSError(f'no space left to write {path} ({os.strerror(error.errno).lower()}; '
                            f'{free / 2**20:.0f} MiB free in {folder}): free some space or write it elsewhere; '
                            f'{osp.basename(path)} was not written')
        explained.errno = error.errno
        return explained
    return error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_partials(folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """Removes, with a warning each, the temporary folders of :func:`atomic_output` in ``folder`` (those of the
    file ``name`` only, if given) whose writer is no longer running: what a write killed outright leaves behind.

    Returns:
        list[str]: The folders removed.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> os.mkdir(os.path.join(folder, '.epoch_3.pth.partial-999999999-x1y2'))  # no such process
        >>> [os.path.basename(p) for p in remove_stale_partials(folder)]
        ['.epoch_3.pth.partial-999999999-x1y2']
    """
    folder = os.fspath(folder)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in sorted(entries):
        match = _PARTIAL.match(entry)
        if not match or (name is not None and match['name'] != name) or not osp.isdir(osp.join(folder, entry)):
            continue
        if match['pid'] and (int(match['pid']) == os.getpid() or _alive(int(match['pid']))):
            continue  # a write under way
        path = osp.join(folder, entry)
        shutil.rmtree(path, ignore_errors=True)
        MMLogger.get_current_instance().warning(
            f'removed {path}: the temporary folder of a write of {osp.join(folder, match["name"])} that was cut '
            'short (its process was killed); the file itself is as it was before that write')
        removed.append(path)
    return removed
