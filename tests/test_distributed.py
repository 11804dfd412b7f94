"""tools/dist_train.sh: two processes on CPU (gloo) train the same weights."""
import os
import subprocess

import pytest
import torch

from .conftest import RETINANET, ROOT

pytestmark = pytest.mark.slow


def test_two_cpu_processes_finish_with_the_same_weights(tiny_detection_run):
    cwd = tiny_detection_run['cwd']
    (cwd / 'dist_config.py').write_text(
        f'_base_ = {RETINANET!r}\n'
        "custom_imports = dict(imports=['mmvanilla', 'tests.rank_weights'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DeepTrainingHook', decay_epochs=1), dict(type='SaveRankWeightsHook')]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PORT='29531', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', str(ROOT / 'tools/dist_train.sh'), 'dist_config.py', '2', '--work-dir', 'dist', '--cfg-options',
         'train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=2'],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'Distributed training is not used' not in proc.stdout + proc.stderr
    rank0, rank1 = (torch.load(cwd / f'dist/rank{r}.pth') for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        if key.endswith(('running_mean', 'running_var', 'num_batches_tracked')):
            continue  # BatchNorm statistics are per process without SyncBN
        assert torch.equal(rank0[key], rank1[key]), key
