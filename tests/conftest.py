import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton kernels of mmvanilla.ops then run on CPU tensors through Triton's interpreter, which is chosen
    # when a kernel is defined: before mmvanilla is imported.
    os.environ.setdefault('TRITON_INTERPRET', '1')

from mmengine.registry import DefaultScope  # noqa: E402

from .tool_server import ToolServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread in the test process: the tensors are tiny, and a thread pool stalls on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def mmdet_scope():
    """Every test starts in mmdet's registry scope, as a user's mmdet config does, whatever the last test left."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
RETINANET = str(ROOT / 'configs/retinanet_vanillanet_tiny_synthetic.py')


_tool_server: ToolServer | None = None


def run_tool(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs ``tools/<tool>`` as a user would, from ``cwd``, in a process of its own; returns the finished process
    (output captured). The process is forked from :mod:`tests.tool_server`'s, which imported torch, mmdet and
    mmvanilla once for the whole test process."""
    global _tool_server
    command = [sys.executable, str(ROOT / 'tools' / tool), *args]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if _tool_server is None:
        _tool_server = ToolServer()
    if _tool_server.serves(command, env):
        return _tool_server.run(command, cwd=cwd, env=env, timeout=600)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='session', autouse=True)
def tool_server():
    """Ends :func:`run_tool`'s server with the test process."""
    yield
    if _tool_server is not None:
        _tool_server.stop()


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory) -> Path:
    """A folder holding a tiny synthetic COCO set where the tiny configs look for it (``data/synthetic_coco``): 16
    training and 8 validation images. Tests run the tools from there and leave the data as it is."""
    from mmvanilla.datasets import generate_synthetic_coco
    cwd = tmp_path_factory.mktemp('coco')
    generate_synthetic_coco(cwd / 'data/synthetic_coco', num_train=16, num_val=8, seed=1)
    return cwd


@pytest.fixture(scope='session')
def tiny_detection_run(tmp_path_factory, tiny_coco):
    """The main job in miniature: RetinaNet trained for 2 short epochs on :func:`tiny_coco`'s set.

    Lambda is 0 in epoch 1 and 1 in epoch 2, so ``epoch_1.pth`` holds lambda 0 and ``epoch_2.pth`` lambda 1.
    """
    cwd = tmp_path_factory.mktemp('run')
    (cwd / 'data').symlink_to(tiny_coco / 'data')
    proc = run_tool('train.py', RETINANET, '--work-dir', 'work', '--cfg-options', 'train_cfg.max_epochs=2',
                    'train_cfg.val_interval=2', 'train_dataloader.batch_size=4', 'custom_hooks.0.decay_epochs=1',
                    'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=-1',
                    'default_hooks.logger.interval=2', cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(cwd=cwd, config=RETINANET, log=proc.stdout + proc.stderr, work=cwd / 'work',
                trained=cwd / 'work/epoch_2.pth', half_trained=cwd / 'work/epoch_1.pth')
