"""Stopping a run on Ctrl-C (SIGINT) or SIGTERM at any moment, without losing the signal.

Python turns a signal into an exception at the next instruction of the main thread. Two things lose it in a
training with DataLoader workers:

- CPython discards an exception raised inside an at-fork handler or a ``__del__`` method ("Exception ignored in
  ..."): a signal that arrives while a DataLoader forks its workers, or while one shuts them down, is dropped and
  the training runs on;
- sent to the whole process group (Ctrl-C in a terminal, a cluster scheduler stopping a job), it reaches the
  workers too, which die of it, and the main process fails with "DataLoader worker exited unexpectedly" instead of
  stopping cleanly.

:func:`stop_on_signals` installs handlers that record the signal and raise :class:`Interrupted`, and that do
nothing in forked children (a worker is stopped by its main process). Where an exception would be discarded or
would leave a DataLoader half built (while the process forks, and from the start of an epoch until its first batch
is loaded, when the DataLoader starts its workers), the handler only records the signal; :class:`StopOnSignalHook`
raises it at the next iteration or epoch boundary, which also catches any signal whose exception was lost
elsewhere. A second signal raises at once, wherever it lands.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from mmengine.hooks import Hook

__all__ = ['Interrupted', 'StopOnSignalHook', 'raise_if_interrupted', 'received_signal', 'signal_takes_precedence',
           'stop_on_signals']

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; ``exit_status`` is the shell's convention, 128 + the signal's number (130 for
    SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_status = 128 + signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_received: list[int] = []  # the signals received under stop_on_signals, first first
_owner: int | None = None  # the process that installed the handlers: forked children have another pid
_received_by: int | None = None  # the process _received belongs to (it outlives the block, for the tools' exit)
_forking = False  # between os.fork's before and after-in-parent handlers, where an exception would be discarded
_deferred = False  # from an epoch's start to its first batch: StopOnSignalHook raises at the first iteration


def _handler(signum: int, frame) -> None:
    if os.getpid() != _owner:
        return  # a forked child, e.g. a DataLoader worker: its main process stops it
    _received.append(signum)
    if not (_forking or _deferred) or len(_received) > 1:  # else StopOnSignalHook raises it at the next boundary
        raise Interrupted(_received[0])


def _set_forking(value: bool) -> None:
    global _forking
    _forking = value


def _defer(value: bool) -> None:
    global _deferred
    _deferred = value


os.register_at_fork(before=lambda: _set_forking(True), after_in_parent=lambda: _set_forking(False),
                    after_in_child=lambda: _set_forking(False))


def raise_if_interrupted() -> None:
    """Raises :class:`Interrupted` if a signal was received under :func:`stop_on_signals`, even if its first
    exception was lost.

    Example:
        >>> with stop_on_signals():
        ...     raise_if_interrupted()  # no signal yet: nothing happens
    """
    if _received and os.getpid() == _owner:
        raise Interrupted(_received[0])


def received_signal() -> int | None:
    """The first signal received in this process under the last :func:`stop_on_signals` block, or None."""
    return _received[0] if _received and os.getpid() == _received_by else None


@contextlib.contextmanager
def signal_takes_precedence() -> Iterator[None]:
    """An error raised after a signal was received becomes that signal's :class:`Interrupted`: a signal sent to
    the whole process group also stops the DataLoader workers (PyTorch's own SIGTERM handler ends them), and the
    main process may meet their end ("DataLoader worker exited unexpectedly") before its own handler raises."""
    try:
        yield
    except Exception as error:  # noqa: BLE001  re-raised unless a signal came first
        signum = received_signal()
        if signum is None:
            raise
        raise Interrupted(signum) from error


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = SIGNALS) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in this process and are recorded for
    :func:`raise_if_interrupted`; forked children ignore them. The previous handlers come back on exit.

    Outside the main thread (where Python cannot set handlers) the block runs with the handlers as they are; inside
    another such block it changes nothing.
    """
    global _owner, _received_by
    if threading.current_thread() is not threading.main_thread() or _owner == os.getpid():
        yield  # no handlers can be set here, or they are set already (an outer block)
        return
    previous = {signum: signal.getsignal(signum) for signum in signals}
    _received.clear()
    _owner = _received_by = os.getpid()
    try:
        for signum in signals:
            signal.signal(signum, _handler)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _owner = None
        _defer(False)


class StopOnSignalHook(Hook):
    """Stops a run at the next iteration or epoch boundary after a signal that was only recorded (see the module
    docstring), and defers a signal's exception from the start of each epoch (train, val or test) to its first
    iteration, while the DataLoader starts its workers. Registered by :func:`mmvanilla.runner.train` and
    :func:`mmvanilla.runner.test`; does nothing outside :func:`stop_on_signals`."""

    priority = 'HIGHEST'

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        raise_if_interrupted()
        _defer(True)

    def _after_epoch(self, runner, mode: str = 'train') -> None:
        _defer(False)
        raise_if_interrupted()

    def _before_iter(self, runner, batch_idx: int, data_batch=None, mode: str = 'train') -> None:
        _defer(False)
        raise_if_interrupted()

    def _after_iter(self, runner, batch_idx: int, data_batch=None, outputs=None, mode: str = 'train') -> None:
        raise_if_interrupted()
