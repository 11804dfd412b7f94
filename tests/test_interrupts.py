"""Ctrl-C and SIGTERM stop a training at any moment, and one training holds its work dir.

Real signals reach a real ``tools/train.py`` at the moments where a signal used to be lost or to kill the wrong
process: while a DataLoader forks its workers (where CPython discards the exception a signal raises), sent to the
whole process group (the workers get it too), during validation and in the middle of writing a checkpoint. The
moments are chosen exactly (``tests/faults.py``), so each case meets its race every time; one more case is a plain
Ctrl-C at whatever moment it lands. Each run: exit status 130 (SIGINT) or 143 (SIGTERM), one line naming the newest
complete checkpoint, no process and no temporary file left, and ``--resume`` continues from it.
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmvanilla.work_dir import LOCK_NAME, hold_work_dir

from .conftest import RETINANET, ROOT, run_tool

pytestmark = pytest.mark.slow

OPTIONS = ['--cfg-options', 'train_dataloader.batch_size=8', 'val_dataloader.batch_size=2', 'train_cfg.val_interval=1',
           'custom_hooks.0.decay_epochs=1', 'default_hooks.checkpoint.interval=1',
           'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1']
# fault (tests/faults.py) -> exit status. The first fork is the training DataLoader's; the second, the validation
# DataLoader's, comes after epoch_1.pth was saved. The second save is epoch_2.pth's. In fork-child, the new worker
# sends the signal to the group and dies of it.
MOMENTS = {
    'SIGINT@fork:2': 130,
    'SIGINT@fork-group:2': 130,
    'SIGTERM@fork-group:2': 143,
    'SIGTERM@fork-child:2': 143,
    'SIGINT@val': 130,
    'SIGTERM@val': 143,
    'SIGINT@save:2': 130,
}
CTRL_C = 'Ctrl-C when epoch_1.pth appears'
# The save of epoch_2.pth interrupted where only one checkpoint is kept: epoch_1.pth is still there.
KEEP_ONE = 'SIGINT@save:2, max_keep_ckpts=1'


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    # A session of its own: a signal to the training's process group never reaches pytest.
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    """Waits for a training; always ends its whole process group. Returns its status, output and what it left."""
    try:
        output = proc.communicate(timeout=timeout)[0]
        deadline = time.monotonic() + 30  # workers that outlive their main process are a failure below, not a hang
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _group_alive(proc.pid)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return dict(status=proc.returncode, output=output, left_processes=left)


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory, tiny_coco):
    """Every moment's training, run side by side (a loaded machine), each stopped by its signal."""
    cwd = tmp_path_factory.mktemp('interrupted')
    (cwd / 'data').symlink_to(tiny_coco / 'data')
    train = [str(ROOT / 'tools/train.py'), RETINANET]
    procs = {fault: _start([str(ROOT / 'tests/faults.py'), fault, *train, '--work-dir', f'work/{fault}', *OPTIONS,
                            'train_cfg.max_epochs=3'], cwd) for fault in MOMENTS}
    procs[CTRL_C] = _start([*train, '--work-dir', 'work/ctrl-c', *OPTIONS, 'train_cfg.max_epochs=50'], cwd)
    procs[KEEP_ONE] = _start([str(ROOT / 'tests/faults.py'), 'SIGINT@save:2', *train, '--work-dir', 'work/keep-one',
                              *OPTIONS, 'train_cfg.max_epochs=3', 'default_hooks.checkpoint.max_keep_ckpts=1'], cwd)
    try:
        first = cwd / 'work/ctrl-c/epoch_1.pth'
        deadline = time.monotonic() + 600
        while not first.exists() and procs[CTRL_C].poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(procs[CTRL_C].pid, signal.SIGINT)  # as a terminal sends Ctrl-C: to the whole group
    finally:
        runs = {fault: _finish(proc) for fault, proc in procs.items()}
    for fault, run in runs.items():
        run['work'] = cwd / 'work' / {CTRL_C: 'ctrl-c', KEEP_ONE: 'keep-one'}.get(fault, fault)
    return dict(cwd=cwd, runs=runs)


@pytest.mark.parametrize('fault', [*MOMENTS, CTRL_C, KEEP_ONE])
def test_a_signal_stops_training_naming_the_checkpoint_to_resume_from(interrupted, fault):
    run = interrupted['runs'][fault]
    status = MOMENTS.get(fault, 130)
    name = 'SIGTERM' if status == 143 else 'SIGINT'
    assert run['status'] == status, run['output'][-3000:]
    newest = re.findall(rf'interrupted \({name}\): the newest complete checkpoint is (\S+); continue with --resume',
                        run['output'])
    assert len(newest) == 1, run['output'][-3000:]
    saved = sorted(run['work'].glob('epoch_*.pth'), key=lambda p: int(p.stem.split('_')[1]))
    assert newest[0] == str(saved[-1])
    last = run['work'] / 'last_checkpoint'
    assert not last.exists() or Path(last.read_text()) in saved
    if fault != CTRL_C:  # stopped at an exact moment: after epoch 1, before epoch 2 was saved
        assert [p.name for p in saved] == ['epoch_1.pth']
    assert 'DataLoader worker' not in run['output']
    # The only tracebacks: where CPython reports the exception it discarded inside an at-fork handler.
    assert run['output'].count('Traceback') == run['output'].count('Exception ignored in'), run['output'][-3000:]
    assert run['output'].rstrip().endswith(f'interrupted ({name})')
    assert not run['left_processes'], 'a DataLoader worker outlived its training'
    assert not list(run['work'].glob('.*partial*')) and not (run['work'] / LOCK_NAME).exists()


def test_resume_continues_from_the_newest_complete_checkpoint(interrupted):
    """After a Ctrl-C in the middle of saving epoch 2; then last_checkpoint is gone and a newer checkpoint is half
    written, as mmengine's own saving, which is not atomic, may leave one."""
    work = interrupted['runs']['SIGINT@save:2']['work']
    (work / 'last_checkpoint').unlink(missing_ok=True)
    whole = (work / 'epoch_1.pth').read_bytes()
    (work / 'epoch_3.pth').write_bytes(whole[:len(whole) // 2])
    kept = hashlib.sha1(whole).hexdigest()

    proc = run_tool('train.py', RETINANET, '--work-dir', str(work), '--resume', *OPTIONS, 'train_cfg.max_epochs=2',
                    cwd=interrupted['cwd'])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert f'{work}/epoch_3.pth is incomplete (its saving was cut short): not resumed from' in output
    assert f'resuming from {work}/epoch_1.pth, the newest complete checkpoint (last_checkpoint is missing)' in output
    log = sorted(work.glob('*/*.log'))[-1].read_text()
    assert re.search(r'Epoch\(train\) +\[2\]', log) and not re.search(r'Epoch\(train\) +\[1\]', log)
    assert hashlib.sha1((work / 'epoch_1.pth').read_bytes()).hexdigest() == kept
    assert torch.load(work / 'epoch_2.pth', weights_only=True)['meta']['epoch'] == 2


def test_a_second_training_into_a_held_work_dir_is_refused_and_writes_nothing(tiny_coco, tmp_path):
    work = tmp_path / 'work'
    # This process holds it, as a live training would. (Nothing here opens the lock file meanwhile: closing any file
    # descriptor of it would release a POSIX lock.)
    with hold_work_dir(work):
        proc = run_tool('train.py', RETINANET, '--work-dir', str(work), *OPTIONS, 'train_cfg.max_epochs=1',
                        cwd=tiny_coco)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
        assert len(errors) == 1, proc.stderr[-3000:]
        assert errors[0].startswith(f'error: work dir {work} is in use by the training of pid {os.getpid()} on '
                                    f'{socket.gethostname()} (started ')
        assert errors[0].endswith('Wait for it to end, stop it, or give another --work-dir')
        assert sorted(p.name for p in work.iterdir()) == [LOCK_NAME]


def test_the_lock_of_a_killed_training_is_taken_over_with_a_warning(tiny_coco, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / LOCK_NAME).write_text(json.dumps(dict(pid=2 ** 22 + 1, host='node7', started=0, command='train.py')))
    (work / '.epoch_4.pth.partial-4194305-abcd').mkdir()  # what a kill -9 during a save leaves
    proc = run_tool('train.py', RETINANET, '--work-dir', str(work), *OPTIONS, 'train_cfg.max_epochs=1',
                    'train_cfg.val_interval=10', cwd=tiny_coco)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert f'{work}/{LOCK_NAME}: took over the lock of the training of pid 4194305 on node7' in output
    assert f'removed {work}/.epoch_4.pth.partial-4194305-abcd: the temporary folder of a write of {work}/epoch_4.pth' \
        in output
    assert (work / 'epoch_1.pth').exists() and not (work / LOCK_NAME).exists()
    assert not list(work.glob('.*partial*'))
