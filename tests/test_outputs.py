"""Outputs are checked before the work, never written over an input, and written whole or not at all."""
import os

import pytest

from mmvanilla.outputs import atomic_output, check_output


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
