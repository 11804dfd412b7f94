import argparse
import os
import pickle
import re

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import TensorDataset

import mmvanilla  # noqa: F401  (registers the checkpoint allowlist)
from mmvanilla.checkpoint import describe_checkpoint, is_complete_checkpoint, read_checkpoint, save_checkpoint
from mmvanilla.weights_only import ALLOWLIST_EXTENSIBLE

# torch's own allowlist (>= 2.4), and its weights_only default (>= 2.6); mmvanilla's reading is tested on every torch.
needs_allowlist = pytest.mark.skipif(not ALLOWLIST_EXTENSIBLE, reason=f'torch {torch.__version__} has no '
                                     'extensible weights_only allowlist (tests/test_weights_only.py)')
WEIGHTS_ONLY_BY_DEFAULT = tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 6)


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets, mode='tensor'):
        loss = ((self.linear(inputs) - targets) ** 2).mean()
        return dict(loss=loss) if mode == 'loss' else [loss]


def make_runner(work_dir, max_epochs, resume=False):
    data = TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), experiment_name=f'toy_{max_epochs}_{resume}',
        train_dataloader=dict(dataset=data, batch_size=4, sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        resume=resume, randomness=dict(seed=0), default_scope='mmengine')


class Exploit:
    """Pickles into a call of os.system: what a malicious checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_a_runner_checkpoint_resumes_under_weights_only_loading(tmp_path):
    make_runner(tmp_path, max_epochs=1).train()
    ckpt = tmp_path / 'epoch_1.pth'
    read_checkpoint(ckpt)  # message hub with HistoryBuffer and numpy arrays
    runner = make_runner(tmp_path, max_epochs=2, resume=True)
    runner.train()
    assert runner.epoch == 2 and runner.iter == 4


@pytest.mark.skipif(not WEIGHTS_ONLY_BY_DEFAULT, reason=f'torch {torch.__version__} loads with weights_only=False by '
                    "default: mmengine's load_checkpoint is not guarded there (mmvanilla reads files first)")
def test_a_checkpoint_that_pickles_a_callable_is_refused(tmp_path):
    path, marker = tmp_path / 'evil.pth', tmp_path / 'pwned'
    with open(path, 'wb') as f:
        torch.save({'state_dict': {}, 'meta': Exploit(marker)}, f)
    with pytest.raises(pickle.UnpicklingError, match='unsupported GLOBAL posix.system'):
        load_checkpoint(ToyModel(), str(path))
    assert not marker.exists()


@needs_allowlist
def test_getattr_in_a_checkpoint_resolves_only_history_buffer_statistics(tmp_path):
    from mmengine.logging import HistoryBuffer

    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'sneaky.pth'
    torch.save({'meta': Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refusing getattr.*'__init__'"):
        torch.load(path, weights_only=True)


@pytest.mark.skipif(not hasattr(torch.serialization, 'safe_globals'), reason='torch.serialization.safe_globals: '
                    'torch >= 2.5')
def test_a_checkpoint_with_the_training_scripts_arguments_loads(tmp_path):
    # As the paper's timm-style script saves it: the weights, and its argparse.Namespace of arguments.
    args = argparse.Namespace(model='vanillanet_5', lr=3.5e-3, decay_epochs=100, drop=0.05)
    torch.save(dict(model=dict(w=torch.ones(2)), args=args, epoch=299), tmp_path / 'official.pth')
    with torch.serialization.safe_globals([argparse.Namespace]):  # as timm loads files; leaving it removes its entry
        pass
    loaded = torch.load(tmp_path / 'official.pth', weights_only=True)
    assert loaded['args'] == args and torch.equal(loaded['model']['w'], torch.ones(2))


# Reading files: one place, errors that name the file, the cause and the fix.

def bad_files(tmp_path) -> dict:
    """What a user may hand over as a checkpoint by mistake (or by malice)."""
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(1000)}}, good)
    files = dict(empty=tmp_path / 'empty.pth', random=tmp_path / 'random.pth', truncated=tmp_path / 'truncated.pth',
                 text=tmp_path / 'notes.pth', evil=tmp_path / 'evil.pth', tensor=tmp_path / 'tensor.pth')
    files['empty'].write_bytes(b'')
    files['random'].write_bytes(bytes(range(256)) * 8)
    files['truncated'].write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    files['text'].write_text('hello')
    torch.save({'state_dict': {}, 'meta': Exploit(tmp_path / 'pwned')}, files['evil'])
    torch.save(torch.ones(2), files['tensor'])
    return files


@pytest.mark.parametrize('kind, message', [
    ('empty', r'empty.pth is empty \(0 bytes\): its saving was cut short'),
    ('random', r'random.pth is not a PyTorch checkpoint \(not a zip archive, as torch.save writes\)'),
    ('truncated', r'truncated.pth is incomplete \(the end of its zip archive is missing\)'),
    ('text', r'notes.pth is not a PyTorch checkpoint \(not a zip archive, as torch.save writes\)'),
    ('tensor', r'tensor.pth holds a Tensor, not a checkpoint dict'),
])
def test_a_file_that_is_no_checkpoint_is_named_with_the_cause_and_the_fix(tmp_path, kind, message):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(ValueError, match=message) as error:
        read_checkpoint(path)
    assert "use a checkpoint written by mmengine's runner or torch.save" in str(error.value)
    assert '\n' not in str(error.value) and 'weights_only' not in str(error.value)


def test_a_checkpoint_that_pickles_code_is_refused_by_name_and_never_run(tmp_path):
    path = bad_files(tmp_path)['evil']
    with pytest.raises(ValueError, match=r'refused to load checkpoint .*evil.pth: it pickles posix.system') as error:
        read_checkpoint(path)
    assert 'weights_only=False' not in str(error.value) and 'Do not load this file' in str(error.value)
    assert not (tmp_path / 'pwned').exists()


@pytest.mark.filterwarnings('ignore:`torch.jit:FutureWarning')  # deprecated, still what writes archives
@pytest.mark.parametrize('kind, message', [
    ('legacy', r"refused to load checkpoint .*legacy.pth: it is in torch's legacy format \(written by torch < 1.6 or "
               r'with _use_new_zipfile_serialization=False\), which is unpickled before anything in it can be checked. '
               'Re-save it with torch.save on a current torch after loading it only if you trust it'),
    ('scripted', r'refused to load checkpoint .*scripted.pth: it is a TorchScript archive \(torch.jit.save\), not a '
                 'checkpoint: loading it runs its code. Load it with torch.jit.load only if you trust it'),
    ('bomb', r'refused to load checkpoint .*bomb.pth: its pickle expands to more than 100,000,000 objects once its '
             'shared references are followed, far more than any checkpoint holds; loading it could take hours. '
             'Do not load this file'),
])
def test_a_file_whose_loading_could_run_code_or_hang_is_refused_by_its_kind(tmp_path, kind, message):
    path = tmp_path / f'{kind}.pth'
    if kind == 'legacy':
        torch.save({'state_dict': {'w': torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    elif kind == 'scripted':
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    else:
        shared = ()
        for _ in range(30):
            shared = (shared, shared)  # 2**31 tuples in 1 KB of pickle
        torch.save({'meta': shared}, path)
    with pytest.raises(ValueError, match=message) as error:
        read_checkpoint(path)
    assert str(error.value).endswith("; use a checkpoint written by mmengine's runner or torch.save (e.g. an earlier "
                                     'epoch_N.pth)')
    assert '\n' not in str(error.value)


def test_completeness_is_told_from_the_end_of_the_file(tmp_path):
    files = bad_files(tmp_path)
    assert is_complete_checkpoint(tmp_path / 'good.pth')
    assert not is_complete_checkpoint(files['truncated']) and not is_complete_checkpoint(files['empty'])
    assert not is_complete_checkpoint(tmp_path / 'missing.pth')


def test_save_checkpoint_writes_the_whole_file_or_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint({'w': torch.ones(3)}, path)
    assert torch.equal(read_checkpoint(path)['w'], torch.ones(3))

    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, 'r+b') as out:  # half the bytes are out, then Ctrl-C
            out.truncate(out.seek(0, 2) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'w': torch.zeros(3)}, path)
    assert torch.equal(read_checkpoint(path)['w'], torch.ones(3)) and os.listdir(tmp_path) == ['epoch_1.pth']


def test_describe_checkpoint_says_what_the_keys_show():
    classifier = {'state_dict': {'network.backbone.stem.layer.conv.weight': torch.ones(1),
                                 'network.head.fc.conv.weight': torch.ones(1)}}
    assert describe_checkpoint(classifier) == 'an image classifier (weights under network)'
    assert describe_checkpoint({'epoch': 3}) == 'no model weights (its keys: epoch)'
