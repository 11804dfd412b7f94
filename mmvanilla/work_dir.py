"""One training per work dir: a lock held while the run lives, with the owner's process id for the message.

Two trainings writing into one work dir would interleave their checkpoints (``epoch_1``, ``epoch_2`` from one,
``epoch_3`` from the other) and their ``last_checkpoint``. :func:`hold_work_dir` takes an exclusive POSIX lock
(``lockf``) on ``WORK_DIR/train.lock``, which the kernel releases when the process ends however it ends, so a lock
is never left held by a dead run (and which, unlike ``flock``, forked DataLoader workers do not inherit, so they
cannot keep it after their main process is killed; the holder must not open and close the file meanwhile, which
releases a POSIX lock); the file records who holds it (pid, host, start time, command line), for the refusal and for
the warning when a crashed run's file is taken over. Under the lock, temporary folders of saves that were cut short
are removed (:func:`~mmvanilla.outputs.remove_stale_partials`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import os.path as osp
import socket
import sys
import time
from collections.abc import Iterator

from mmengine.logging import MMLogger

from .outputs import remove_stale_partials

__all__ = ['LOCK_NAME', 'WorkDirInUse', 'check_work_dir_free', 'hold_work_dir']

LOCK_NAME = 'train.lock'


class WorkDirInUse(RuntimeError):
    """Another live training holds the work dir."""


def _owner_of(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or '{}')
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return 'another process'
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner.get('started', 0)))
    return f'the training of pid {owner.get("pid")} on {owner.get("host")} (started {started}: {owner.get("command")})'


def _is_main_rank() -> bool:
    return os.environ.get('RANK', '0') == '0'  # torchrun and mmengine's launchers set RANK


def _refusal(work_dir: str, owner: dict) -> WorkDirInUse:
    return WorkDirInUse(f'work dir {work_dir} is in use by {_describe(owner)}: two trainings in one work dir would '
                        'mix their checkpoints and logs. Wait for it to end, stop it, or give another --work-dir')


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        return False
    return True


def check_work_dir_free(work_dir: str | os.PathLike) -> None:
    """Refuses, writing nothing, a work dir that a live training holds: the check a run makes before its others,
    so that its refusal leaves nothing behind; :func:`hold_work_dir` then takes the dir.

    Raises:
        WorkDirInUse: another live process holds it.
    """
    path = osp.join(os.fspath(work_dir), LOCK_NAME)
    if not _is_main_rank() or not osp.exists(path):
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        if not _try_lock(fd):
            raise _refusal(os.fspath(work_dir), _owner_of(fd))
    finally:
        os.close(fd)  # and with it the lock just taken


@contextlib.contextmanager
def hold_work_dir(work_dir: str | os.PathLike) -> Iterator[None]:
    """Holds ``work_dir`` (creating it) for one training; on the main rank only (the others write no checkpoints).

    Args:
        work_dir (str | os.PathLike): The run's work dir.

    Raises:
        WorkDirInUse: another live process holds it; nothing is written then.

    Example:
        >>> import tempfile
        >>> work_dir = tempfile.mkdtemp()
        >>> with hold_work_dir(work_dir):
        ...     os.path.exists(os.path.join(work_dir, LOCK_NAME))
        True
        >>> os.path.exists(os.path.join(work_dir, LOCK_NAME))  # released
        False
    """
    if not _is_main_rank():
        yield
        return
    work_dir = os.fspath(work_dir)
    path = osp.join(work_dir, LOCK_NAME)
    os.makedirs(work_dir, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_lock(fd)
        except OSError:
            os.close(fd)
            raise
        if not locked:
            owner = _owner_of(fd)
            os.close(fd)
            raise _refusal(work_dir, owner)
        # The file may have been removed by its last holder between our open and our lock: lock the one at path.
        if osp.exists(path) and os.fstat(fd).st_ino == os.stat(path).st_ino:
            break
        os.close(fd)
    try:
        stale = _owner_of(fd)
        if stale:
            MMLogger.get_current_instance().warning(
                f'{path}: took over the lock of {_describe(stale)}, which ended without releasing it (killed or '
                'crashed); its newest complete checkpoint is what --resume continues from')
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                                     command=' '.join(sys.argv))).encode())
        os.fsync(fd)
        remove_stale_partials(work_dir)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a waiting opener finds the file gone and opens a new one
        os.close(fd)
