"""Reading checkpoints with tensors and training state only (mmvanilla/weights_only.py), on every supported torch:
through torch's extensible allowlist where it has one, else through a restricted unpickler, which is tested here
on this torch too. Files whose loading could run code or hang (torch's legacy format, TorchScript, pickles that
expand past any checkpoint) are refused before either reads them."""
import argparse
import collections
import io
import os
import pickle
import sys
import time

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


class Keyed:
    """Pickles into an OrderedDict whose one key is ``key``: unpickling it hashes the key."""

    def __init__(self, key):
        self.key = key

    def __reduce__(self):
        return collections.OrderedDict, (), None, None, iter([(self.key, None)])


def doubling_tuple(levels):
    """A tuple of two references to one tuple, ``levels`` times: a few bytes of pickle a level, 2**levels tuples."""
    key = ()
    for _ in range(levels):
        key = (key, key)
    return key


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


@pytest.mark.parametrize('first', ['magic number', 'code'])
def test_a_file_in_torchs_legacy_format_is_refused_before_anything_in_it_is_unpickled(loader, tmp_path, first):
    path, marker = tmp_path / 'legacy.pth', tmp_path / 'pwned'
    torch.save(dict(meta=Exploit(marker)), path, _use_new_zipfile_serialization=False)
    if first == 'code':  # torch's legacy reader unpickles a file's first object to check it is the magic number
        path.write_bytes(pickle.dumps(Exploit(marker), protocol=2) + path.read_bytes())
    with pytest.raises(pickle.UnpicklingError, match=r"legacy.pth: it is in torch's legacy format .* Re-save it with "
                       'torch.save on a current torch after loading it only if you trust it'):
        loader(path)
    assert not marker.exists()


@pytest.mark.filterwarnings('ignore:`torch.jit:FutureWarning')  # deprecated, still what writes archives
def test_a_torchscript_archive_is_refused_before_torch_jit_load_runs_it(loader, tmp_path, monkeypatch):
    path, marker = tmp_path / 'scripted.pth', tmp_path / 'pwned'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    monkeypatch.setattr(torch.jit, 'load', lambda *args, **kwargs: marker.touch())  # stands for the archive's code
    with pytest.raises(pickle.UnpicklingError, match=r'scripted.pth: it is a TorchScript archive \(torch.jit.save\), '
                       'not a checkpoint: loading it runs its code'):
        loader(path)
    assert not marker.exists()


def test_a_hash_bomb_is_refused_at_once(loader, tmp_path):
    # 2**31 tuples in 1 KB: hashing them would keep the loader busy for about 20 s (2**100, in 2 KB: for ages).
    path = tmp_path / 'bomb.pth'
    torch.save(dict(meta=Keyed(doubling_tuple(30))), path)
    start = time.perf_counter()
    with pytest.raises(pickle.UnpicklingError, match=r'bomb.pth: its pickle expands to more than 100,000,000 objects '
                       'once its shared references are followed'):
        loader(path)
    assert time.perf_counter() - start < 0.5


def test_a_pickle_nested_deeper_than_torch_save_writes_is_refused(loader, tmp_path):
    deep = []
    for _ in range(2000):
        deep = [deep]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # what it takes to pickle it
    try:
        torch.save(dict(meta=deep), tmp_path / 'deep.pth')
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(pickle.UnpicklingError, match=r'deep.pth: its pickle nests objects more than 1000 levels deep'):
        loader(tmp_path / 'deep.pth')


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
