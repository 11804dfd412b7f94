import argparse
import os
import pickle

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import TensorDataset

import mmvanilla  # noqa: F401  (registers the checkpoint allowlist)


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
    torch.load(ckpt, weights_only=True)  # message hub with HistoryBuffer and numpy arrays
    runner = make_runner(tmp_path, max_epochs=2, resume=True)
    runner.train()
    assert runner.epoch == 2 and runner.iter == 4


def test_a_checkpoint_that_pickles_a_callable_is_refused(tmp_path):
    path, marker = tmp_path / 'evil.pth', tmp_path / 'pwned'
    with open(path, 'wb') as f:
        torch.save({'state_dict': {}, 'meta': Exploit(marker)}, f)
    with pytest.raises(pickle.UnpicklingError, match='unsupported GLOBAL posix.system'):
        load_checkpoint(ToyModel(), str(path))
    assert not marker.exists()


def test_getattr_in_a_checkpoint_resolves_only_history_buffer_statistics(tmp_path):
    from mmengine.logging import HistoryBuffer

    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'sneaky.pth'
    torch.save({'meta': Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refusing getattr.*'__init__'"):
        torch.load(path, weights_only=True)


def test_a_checkpoint_with_the_training_scripts_arguments_loads(tmp_path):
    # As the paper's timm-style script saves it: the weights, and its argparse.Namespace of arguments.
    args = argparse.Namespace(model='vanillanet_5', lr=3.5e-3, decay_epochs=100, drop=0.05)
    torch.save(dict(model=dict(w=torch.ones(2)), args=args, epoch=299), tmp_path / 'official.pth')
    with torch.serialization.safe_globals([argparse.Namespace]):  # as timm loads files; leaving it removes its entry
        pass
    loaded = torch.load(tmp_path / 'official.pth', weights_only=True)
    assert loaded['args'] == args and torch.equal(loaded['model']['w'], torch.ones(2))
