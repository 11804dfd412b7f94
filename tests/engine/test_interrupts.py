"""Ctrl-C (SIGINT) and SIGTERM under stop_on_signals: raised in the main process, never lost, ignored by forked
children, and deferred from an epoch's start to its first iteration (mmvanilla/engine/interrupts.py)."""
import os
import signal

import pytest

from mmvanilla.engine.interrupts import (Interrupted, StopOnSignalHook, raise_if_interrupted, received_signal,
                                        signal_takes_precedence, stop_on_signals)


@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_interrupted_with_the_shells_exit_status(signum, status):
    with pytest.raises(Interrupted) as raised:
        with stop_on_signals():
            os.kill(os.getpid(), signum)
    assert raised.value.exit_status == status and raised.value.name == signal.Signals(signum).name
    assert isinstance(raised.value, KeyboardInterrupt)  # what code that handles Ctrl-C already catches


def test_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


class RaisesInDel:
    """Python discards an exception raised in ``__del__``, as in an at-fork handler: the signal's is lost there."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_signal_whose_exception_was_discarded_still_stops_at_the_next_iteration():
    hook = StopOnSignalHook()
    with stop_on_signals():
        RaisesInDel()  # "Exception ignored in ... RaisesInDel.__del__": the run would go on
        with pytest.raises(Interrupted):
            hook.before_train_iter(runner=None, batch_idx=0)
        with pytest.raises(Interrupted):
            raise_if_interrupted()  # and at every later boundary


def test_a_signal_while_an_epoch_starts_its_dataloader_waits_for_the_first_iteration_unless_repeated():
    hook = StopOnSignalHook()
    with stop_on_signals():
        hook.before_train_epoch(runner=None)
        os.kill(os.getpid(), signal.SIGTERM)  # while the DataLoader would be starting its workers: recorded only
        with pytest.raises(Interrupted) as raised:
            hook.before_train_iter(runner=None, batch_idx=0)
    assert raised.value.signum == signal.SIGTERM
    with pytest.raises(Interrupted):
        with stop_on_signals():
            hook.before_val_epoch(runner=None)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C does not wait


def test_a_forked_child_ignores_the_signal_its_parent_stops_on():
    with stop_on_signals():
        pid = os.fork()
        if pid == 0:  # the child, as a DataLoader worker: goes on, and ends when its work is done
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(7)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7


def test_outside_the_block_nothing_is_recorded_or_raised():
    hook = StopOnSignalHook()
    hook.before_train_iter(runner=None, batch_idx=0)
    raise_if_interrupted()


def test_an_error_that_follows_a_signal_is_reported_as_that_signal():
    """A signal to the whole group also ends the DataLoader workers; the main process may meet their end first."""
    hook = StopOnSignalHook()
    with pytest.raises(Interrupted) as raised:
        with stop_on_signals():
            hook.before_val_epoch(runner=None)  # the DataLoader starts its worker: the signal is recorded only
            os.kill(os.getpid(), signal.SIGTERM)
            with signal_takes_precedence():
                raise RuntimeError('DataLoader worker (pid(s) 4242) exited unexpectedly')
    assert raised.value.signum == signal.SIGTERM and isinstance(raised.value.__cause__, RuntimeError)
    assert received_signal() == signal.SIGTERM  # still known to the tool that reports it
    with pytest.raises(RuntimeError, match='no signal came first'):
        with stop_on_signals(), signal_takes_precedence():
            raise RuntimeError('no signal came first')
    assert received_signal() is None
