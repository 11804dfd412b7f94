"""What tools/train.py and tools/test.py check before a run (mmvanilla/runner.py), in-process and fast."""
import time
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.hooks import CheckpointHook

from mmvanilla.checkpoint import is_complete_checkpoint
from mmvanilla.runner import (AtomicCheckpointRunner, KeepUntilSavedCheckpointHook, check_model_config,
                              check_pretrained, find_resume_checkpoint, load_config)

from .conftest import RETINANET
from .engine.test_hooks import ToyAccuracy, ToyClassifier, ToyDataset


def test_a_backbone_norm_that_cannot_be_folded_is_refused_by_its_setting():
    cfg = Config.fromfile(RETINANET)
    cfg.model.backbone.norm_cfg = dict(type='GN', num_groups=4)
    with pytest.raises(ValueError, match=r"model.backbone.norm_cfg.type='GN': VanillaNet folds its norms into "
                                         r"convolutions, so norm_cfg must be a BatchNorm type; set "
                                         r"model.backbone.norm_cfg.type='BN'"):
        check_model_config(cfg)
    cfg.model.backbone.norm_cfg = dict(type='SyncBN')
    check_model_config(cfg)


def test_a_config_with_a_syntax_error_is_named_with_its_line(tmp_path):
    (tmp_path / 'broken.py').write_text("model = dict(\n    type='RetinaNet',\n    backbone=dict(type='VanillaNet'\n")
    with pytest.raises(ValueError, match=r'config file .*broken.py, line \d+: .*; fix the Python syntax there'):
        load_config(str(tmp_path / 'broken.py'))


def save(path, epoch, complete=True):
    torch.save({'meta': {'epoch': epoch}, 'state_dict': {'w': torch.ones(100)}}, path)
    if not complete:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    time.sleep(0.01)  # distinct modification times


def test_resume_takes_the_newest_complete_checkpoint_whatever_last_checkpoint_says(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) == (None, [])
    save(tmp_path / 'epoch_1.pth', 1)
    assert find_resume_checkpoint(str(tmp_path)) == (str(tmp_path / 'epoch_1.pth'), [])  # no last_checkpoint
    save(tmp_path / 'epoch_2.pth', 2)
    save(tmp_path / 'epoch_10.pth', 10, complete=False)  # cut short: never taken for a whole one
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))  # stale
    (tmp_path / 'best_coco_bbox_mAP_epoch_2.pth').write_bytes(b'')  # not a checkpoint to resume from
    assert find_resume_checkpoint(str(tmp_path)) == (str(tmp_path / 'epoch_2.pth'), [str(tmp_path / 'epoch_10.pth')])


def test_pretrained_weights_are_read_before_training(tmp_path):
    cfg = Config.fromfile(RETINANET)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'vanillanet_5.pth'))
    with pytest.raises(FileNotFoundError, match='vanillanet_5.pth not found'):
        check_pretrained(cfg)
    (tmp_path / 'vanillanet_5.pth').write_bytes(b'')
    with pytest.raises(ValueError, match=r'vanillanet_5.pth is empty \(0 bytes\)'):
        check_pretrained(cfg)
    torch.save({'model': {'stem1.0.weight': torch.ones(1)}}, tmp_path / 'vanillanet_5.pth')
    with pytest.raises(ValueError, match=r'model.backbone.init_cfg: checkpoint .*vanillanet_5.pth does not fit this '
                                         r'VanillaNet: .*size mismatch for stem.layer.conv1.conv.weight'):
        check_pretrained(cfg)  # loaded as mmengine will: a file that fits nothing is refused before training


def test_a_backbone_checkpoint_that_fits_passes_the_check_in_any_layout(tmp_path):
    from mmvanilla.models import VanillaNet
    cfg = Config.fromfile(RETINANET)
    settings = {k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')}
    weights = {f'backbone.{k}': v for k, v in VanillaNet(**settings).state_dict().items()}
    for saved, prefix in ((weights, None), ({'state_dict': weights}, None), ({'state_dict': weights}, 'backbone.')):
        torch.save(saved, tmp_path / 'backbone.pth')
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'backbone.pth'), prefix=prefix)
        check_pretrained(cfg)


def test_a_setting_a_vanillanet_does_not_have_is_named_with_the_closest_one():
    cfg = Config.fromfile(RETINANET)
    cfg.model.backbone.act_nun = 3
    with pytest.raises(ValueError, match="model.backbone.act_nun: VanillaNet has no setting 'act_nun'; did you mean "
                                         'act_num\\? its settings are arch, act_num'):
        check_model_config(cfg)


def checkpoint_runner(work_dir, max_keep_ckpts: int, **checkpoint) -> AtomicCheckpointRunner:
    """A CPU runner of a toy model, 4 iterations, a validation and one checkpoint an epoch, keeping
    ``max_keep_ckpts``."""
    loader = dict(batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return AtomicCheckpointRunner(
        model=ToyClassifier(), work_dir=str(work_dir), experiment_name=uuid.uuid4().hex,
        train_dataloader=dict(loader, dataset=ToyDataset(16)),
        train_cfg=dict(by_epoch=True, max_epochs=3, val_interval=1),
        val_dataloader=dict(loader, dataset=ToyDataset(8)), val_cfg=dict(), val_evaluator=Evaluator(ToyAccuracy()),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=max_keep_ckpts,
                                           **checkpoint)))


@pytest.mark.parametrize('moment', ['writing epoch_2.pth', 'removing epoch_1.pth'])
@pytest.mark.parametrize('max_keep_ckpts', [1, 2])
def test_an_interrupted_save_or_rotation_keeps_the_last_complete_checkpoint(moment, max_keep_ckpts, tmp_path,
                                                                            monkeypatch):
    runner = checkpoint_runner(tmp_path, max_keep_ckpts)
    assert isinstance(next(h for h in runner.hooks if isinstance(h, CheckpointHook)), KeepUntilSavedCheckpointHook)
    saves = []
    if moment == 'writing epoch_2.pth':
        real_save = torch.save

        def save_then_stop(obj, f, *args, **kwargs):
            saves.append(f)
            if len(saves) == 2:
                raise KeyboardInterrupt
            real_save(obj, f, *args, **kwargs)
        monkeypatch.setattr(torch, 'save', save_then_stop)
    else:
        from mmengine.fileio import LocalBackend

        def stop(self, path):
            raise KeyboardInterrupt
        monkeypatch.setattr(LocalBackend, 'remove', stop)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    kept = sorted(p.name for p in tmp_path.glob('epoch_*.pth'))
    if moment == 'writing epoch_2.pth':
        assert kept == ['epoch_1.pth']
    elif max_keep_ckpts == 1:
        assert kept == ['epoch_1.pth', 'epoch_2.pth']  # one more than asked, never one fewer
    else:
        assert kept == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    named = (tmp_path / 'last_checkpoint').read_text()
    assert Path(named).is_file() and is_complete_checkpoint(named)
    assert find_resume_checkpoint(str(tmp_path))[0] == str(tmp_path / kept[-1])


def test_rotation_removes_what_mmengine_removes_once_the_new_checkpoint_is_saved(tmp_path):
    checkpoint_runner(tmp_path, max_keep_ckpts=2).train()
    assert sorted(p.name for p in tmp_path.glob('epoch_*.pth')) == ['epoch_2.pth', 'epoch_3.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_3.pth')


def test_the_best_checkpoint_replaces_the_previous_best_once_saved(tmp_path, monkeypatch):
    # The accuracy rises every epoch, so each validation saves a new best checkpoint and removes the last one.
    scores = iter([0.5, 0.6, 0.7])
    monkeypatch.setattr(ToyAccuracy, 'compute_metrics', lambda self, results: dict(accuracy=next(scores)))
    checkpoint_runner(tmp_path, max_keep_ckpts=1, save_best='accuracy', rule='greater').train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['best_accuracy_epoch_3.pth', 'epoch_3.pth']
