"""Runs a tool with a fault injected at an exact moment, so that a test meets a race every time, not by luck.

    python tests/faults.py FAULT tools/TOOL.py ARGS...

FAULT is ``WHAT@MOMENT[:N]``, at the N-th such moment (default 1). WHAT is a signal's name (``SIGINT``, ``SIGTERM``),
sent to the process itself, or to its whole process group with ``@MOMENT-group`` (as Ctrl-C in a terminal), or
``ENOSPC``, a full disk. MOMENT is one of:

- ``fork``: inside an at-fork handler in the parent, right after a DataLoader forked a worker (the N-th worker
  started): where CPython discards the exception a signal raises;
- ``fork-child``: from that new worker, to the whole group, with the signal's default action restored in the worker
  first (as PyTorch's worker does for a signal from outside): the worker dies of it, as a cluster scheduler's
  SIGTERM to a job kills its workers;
- ``val``: at an iteration of a validation (the second of each);
- ``save``: in the middle of writing a checkpoint, half of its bytes written.

The signals are real (``os.kill``); only their timing is chosen.
"""
import errno
import os
import runpy
import signal
import sys


def _worker_forks(in_parent=None, in_child=None) -> None:
    """Calls ``in_parent(n)`` in the parent and ``in_child(n)`` in the child after the n-th fork that a DataLoader
    makes to start a worker (not the other forks of a run, such as mmengine's ``git`` subprocess)."""
    # Registered after mmvanilla's own at-fork handlers, so that it runs after them in the parent: a signal sent
    # there arrives inside an at-fork handler, where Python discards the exception it raises.
    import mmvanilla.engine.interrupts  # noqa: F401
    from torch.utils.data import dataloader
    starting, forks = [], []
    init = dataloader._MultiProcessingDataLoaderIter.__init__

    def starting_workers(self, *args, **kwargs):
        starting.append(1)
        try:
            init(self, *args, **kwargs)
        finally:
            starting.pop()

    def after_in_parent():
        if starting:
            forks.append(1)
            if in_parent:
                in_parent(len(forks))

    def after_in_child():
        if starting and in_child:
            in_child(len(forks) + 1)  # the parent counts this fork after it

    dataloader._MultiProcessingDataLoaderIter.__init__ = starting_workers
    os.register_at_fork(after_in_parent=after_in_parent, after_in_child=after_in_child)


def _in_val(send) -> None:
    from mmengine.runner import ValLoop
    run_iter = ValLoop.run_iter

    def patched(self, idx, data_batch):
        if idx == 1:
            send()
        return run_iter(self, idx, data_batch)

    ValLoop.run_iter = patched


def _in_save(send) -> None:
    from mmengine.fileio.backends import LocalBackend

    def put(self, obj, filepath):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
            send()
            f.write(obj[len(obj) // 2:])

    LocalBackend.put = put


def _disk_full():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def install(fault: str) -> None:
    what, _, moment = fault.partition('@')
    moment, _, nth = moment.partition(':')
    nth = int(nth or 1)
    group = moment.endswith('-group')
    moment = moment.removesuffix('-group')

    def deliver():
        if what == 'ENOSPC':
            _disk_full()
        elif group:
            os.killpg(os.getpgid(0), getattr(signal, what))
        else:
            os.kill(os.getpid(), getattr(signal, what))

    def nth_time(n):
        if n == nth:
            deliver()

    def from_the_worker(n):
        if n == nth:
            signal.signal(getattr(signal, what), signal.SIG_DFL)
            os.killpg(os.getpgid(0), getattr(signal, what))

    if moment == 'fork':
        _worker_forks(in_parent=nth_time)
    elif moment == 'fork-child':
        _worker_forks(in_child=from_the_worker)
    else:
        count = []

        def send():
            count.append(1)
            nth_time(len(count))
        {'val': _in_val, 'save': _in_save}[moment](send)


if __name__ == '__main__':
    fault, tool, *args = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(tool))
    install(fault)
    sys.argv = [tool, *args]
    runpy.run_path(tool, run_name='__main__')
