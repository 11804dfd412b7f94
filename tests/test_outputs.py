"""Outputs are checked before the work, never written over an input, and written whole or not at all."""
import errno
import os
import shutil
from pathlib import Path

import pytest

from mmvanilla.outputs import atomic_output, check_output, describe_missing, remove_stale_partials


def test_a_new_file_in_an_existing_folder_may_be_written(tmp_path):
    assert check_output(tmp_path / 'out.pth') == str(tmp_path / 'out.pth')


def test_an_existing_output_is_replaced_only_with_force(tmp_path):
    (tmp_path / 'out.pth').write_bytes(b'old')
    with pytest.raises(ValueError, match='out.pth exists: pass --force to replace it'):
        check_output(tmp_path / 'out.pth')
    check_output(tmp_path / 'out.pth', force=True)


def test_the_output_is_never_an_input_even_with_force(tmp_path):
    (tmp_path / 'ckpt.pth').write_bytes(b'training checkpoint')
    os.symlink(tmp_path / 'ckpt.pth', tmp_path / 'link.pth')
    for out in (tmp_path / 'ckpt.pth', tmp_path / 'link.pth', tmp_path / 'sub' / '..' / 'ckpt.pth'):
        with pytest.raises(ValueError, match='is the input .*optimizer state and EMA weights'):
            check_output(out, force=True, inputs=[tmp_path / 'ckpt.pth'])


def test_a_folder_or_a_missing_folder_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=f'{tmp_path} is a folder: give a file name'):
        check_output(tmp_path, what='deploy checkpoint')
    with pytest.raises(FileNotFoundError, match=f'folder {tmp_path}/missing .* does not exist: create it'):
        check_output(tmp_path / 'missing' / 'out.pth')


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / 'out.txt'
    out.write_text('old')
    for error in (RuntimeError('disk full'), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_output(out) as tmp:
                with open(tmp, 'w') as f:
                    f.write('half of the new')
                raise error
        assert out.read_text() == 'old' and os.listdir(tmp_path) == ['out.txt']


def test_a_finished_write_replaces_the_file_with_its_companions(tmp_path):
    out = tmp_path / 'model.onnx'
    with atomic_output(out) as tmp:
        assert os.path.basename(tmp) == 'model.onnx' and not out.exists()  # the name writers derive others from
        with open(tmp, 'w') as f:
            f.write('graph')
        with open(tmp + '.data', 'w') as f:
            f.write('weights')
    assert sorted(os.listdir(tmp_path)) == ['model.onnx', 'model.onnx.data']
    assert out.read_text() == 'graph'


def test_a_full_disk_is_named_with_the_file_and_leaves_nothing(tmp_path):
    out = tmp_path / 'epoch_3.pth'
    with pytest.raises(OSError, match=rf'no space left to write {out} \(no space left on device; \d+ MiB free in '
                                      rf'{tmp_path}\): free some space or write it elsewhere; epoch_3.pth was not'):
        with atomic_output(out) as tmp:
            open(tmp, 'wb').write(b'half')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert os.listdir(tmp_path) == []


def test_what_a_killed_writer_left_is_removed_and_a_live_writers_is_kept(tmp_path):
    dead = tmp_path / '.epoch_3.pth.partial-4194305-abcd'  # a pid above Linux's maximum: no such process
    old = tmp_path / '.epoch_2.pth.partial-abcd'  # written before the folder carried its writer's pid
    live = tmp_path / f'.epoch_4.pth.partial-{os.getpid()}-abcd'
    other = tmp_path / '.epoch_5.pth.partial-4194305-abcd'
    for folder in (dead, old, live, other):
        folder.mkdir()
    assert remove_stale_partials(tmp_path, 'epoch_3.pth') == [str(dead)]  # a write of epoch_3.pth clears its own
    assert sorted(remove_stale_partials(tmp_path)) == [str(old), str(other)]  # a run clears its whole work dir
    assert os.listdir(tmp_path) == [live.name]


def test_a_missing_input_is_described_as_what_it_is(tmp_path):
    (tmp_path / 'loop.py').symlink_to(tmp_path / 'loop.py')
    (tmp_path / 'dangling.py').symlink_to(tmp_path / 'gone.py')
    assert describe_missing(tmp_path / 'loop.py', 'config file') == (
        f'config file {tmp_path}/loop.py is a symbolic link that loops (too many levels of symbolic links): point it '
        'at the real file')
    assert describe_missing(tmp_path / 'dangling.py') == (
        f'file {tmp_path}/dangling.py is a symbolic link to {tmp_path}/gone.py, which does not exist: point it at the '
        'file')
    assert describe_missing(tmp_path, 'checkpoint') == f'checkpoint {tmp_path} is a folder: give the file in it'


def test_a_ctrl_c_during_the_cleanup_after_the_rename_still_removes_the_temporary_folder(tmp_path, monkeypatch):
    rmtree, calls = shutil.rmtree, []

    def interrupted_once(path, **kwargs):  # Ctrl-C lands just as the cleanup starts, the file already in place
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        rmtree(path, **kwargs)

    monkeypatch.setattr(shutil, 'rmtree', interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / 'epoch_1.pth') as tmp:
            Path(tmp).write_text('weights')
    assert os.listdir(tmp_path) == ['epoch_1.pth'] and len(calls) == 2
