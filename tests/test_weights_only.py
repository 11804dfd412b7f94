"""Reading checkpoints with tensors and training state only (mmvanilla/weights_only.py), on every supported torch:
through torch's extensible allowlist where it has one, else through a restricted unpickler, which is tested here
on this torch too."""
import argparse
import io
import os
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmvanilla import weights_only
from mmvanilla.checkpoint import safe_globals
from mmvanilla.weights_only import load_weights_only


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class Sneaky:
    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


@pytest.fixture(params=['this torch', 'restricted unpickler'])
def loader(request, monkeypatch):
    """Both ways of reading: the one this torch takes, and the restricted unpickler of a torch < 2.4."""
    if request.param == 'restricted unpickler':
        monkeypatch.setattr(weights_only, 'ALLOWLIST_EXTENSIBLE', False)
    return lambda path: load_weights_only(path, safe_globals())


def test_training_state_loads(loader, tmp_path):
    hub = MessageHub('weights_only_test')
    for value in (1.0, 0.5):
        hub.update_scalar('train/loss', value)
    args = argparse.Namespace(model='vanillanet_5', lr=3.5e-3)
    torch.save(dict(state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict(), args=args), tmp_path / 'a.pth')
    loaded = loader(tmp_path / 'a.pth')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2)) and loaded['args'] == args
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 0.75


def test_code_is_refused_by_name_and_never_run(loader, tmp_path):
    torch.save(dict(meta=Exploit(tmp_path / 'pwned')), tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match=r'GLOBAL posix\.system'):
        loader(tmp_path / 'evil.pth')
    assert not (tmp_path / 'pwned').exists()


def test_getattr_resolves_only_history_buffer_statistics(loader, tmp_path):
    torch.save(dict(meta=Sneaky()), tmp_path / 'sneaky.pth')
    with pytest.raises(pickle.UnpicklingError, match=r"refusing getattr.*'__init__'"):
        loader(tmp_path / 'sneaky.pth')


@pytest.mark.parametrize('entry', ['load', 'loads', 'Unpickler'])
def test_every_entry_point_of_the_restricted_unpickler_refuses_code(tmp_path, entry):
    marker = tmp_path / 'pwned'
    payload = pickle.dumps(Exploit(marker), protocol=2)
    module = weights_only._restricted_pickle_module(safe_globals())
    read = dict(load=lambda: module.load(io.BytesIO(payload), encoding='utf-8'),  # as torch calls them
                loads=lambda: module.loads(payload, encoding='utf-8'),
                Unpickler=lambda: module.Unpickler(io.BytesIO(payload), encoding='utf-8').load())[entry]
    with pytest.raises(pickle.UnpicklingError, match=r'GLOBAL posix\.system'):
        read()
    assert not marker.exists()
