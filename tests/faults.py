"""Runs a tool with a fault injected at an exact moment, so that a test meets a race every time, not by luck.

    python tests/faults.py FAULT tools/TOOL.py ARGS...

FAULT is ``WHAT@MOMENT[:N]``, at the N-th such moment (default 1). WHAT is a signal's name (``SIGINT``, ``SIGTERM``),
sent to the process itself, or to its whole process group with ``@MOMENT-group`` (as Ctrl-C in a terminal), or
``ENOSPC``, a full disk. MOMENT is one of:

- ``fork``: inside an at-fork handler in the parent, right after a DataLoader forked a worker: where CPython
  discards the exception a signal raises;
- ``val``: at an iteration of a validation (the second of each);
- ``save``: in the middle of writing a checkpoint, half of its bytes written.

The signals are real (``os.kill``); only their timing is chosen.
"""
import errno
import os
import runpy
import signal
import sys


def _at_fork(send) -> None:
    # Registered after mmvanilla's own at-fork handlers, so that it runs after them in the parent: the signal
    # arrives inside an at-fork handler, where Python discards the exception it raises.
    import mmvanilla.engine.interrupts  # noqa: F401
    os.register_at_fork(after_in_parent=send)


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
    group = moment.endswith('-group')
    moment = moment.removesuffix('-group')
    count = []

    def send():
        count.append(1)
        if len(count) != int(nth or 1):
            return
        if what == 'ENOSPC':
            _disk_full()
        elif group:
            os.killpg(os.getpgid(0), getattr(signal, what))
        else:
            os.kill(os.getpid(), getattr(signal, what))

    {'fork': _at_fork, 'val': _in_val, 'save': _in_save}[moment](send)


if __name__ == '__main__':
    fault, tool, *args = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(tool))
    install(fault)
    sys.argv = [tool, *args]
    runpy.run_path(tool, run_name='__main__')
