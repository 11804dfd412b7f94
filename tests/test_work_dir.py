"""One training per work dir (mmvanilla/work_dir.py): a live holder refuses a second one, and a dead one's lock is
taken over with a warning."""
import json
import os
import subprocess
import sys

import pytest

from mmvanilla.work_dir import LOCK_NAME, WorkDirInUse, check_work_dir_free, hold_work_dir


def in_another_process(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', 'from mmvanilla.work_dir import *\n' + code], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_held_work_dir_is_refused_by_another_process_with_the_holder_named(tmp_path):
    with hold_work_dir(tmp_path):
        for call in ('check_work_dir_free', 'hold_work_dir'):
            code = f'{call}({str(tmp_path)!r})' if call == 'check_work_dir_free' else \
                f'with hold_work_dir({str(tmp_path)!r}): pass'
            proc = in_another_process(code)
            assert proc.returncode == 1
            assert f'WorkDirInUse: work dir {tmp_path} is in use by the training of pid {os.getpid()}' in proc.stderr
    assert os.listdir(tmp_path) == []  # released, and the lock file with it
    check_work_dir_free(tmp_path)


def test_a_lock_left_by_a_killed_training_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(pid=4194305, host='node7', started=0, command='train.py x')))
    check_work_dir_free(tmp_path)  # nobody holds it
    proc = in_another_process(f'with hold_work_dir({str(tmp_path)!r}): print("held")')
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == 'held'
    assert 'took over the lock of the training of pid 4194305 on node7' in proc.stdout + proc.stderr


def test_only_the_main_rank_holds_the_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '1')
    with hold_work_dir(tmp_path):
        assert not (tmp_path / LOCK_NAME).exists()


def test_a_refusal_is_an_error_the_tools_turn_into_one_line():
    assert issubclass(WorkDirInUse, RuntimeError)  # runner.clear_errors: one line, exit status 2
