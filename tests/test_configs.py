"""The shipped configs: they load, build, and say what the paper's recipe says."""
import glob

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmvanilla  # noqa: F401
from mmvanilla.deploy import build_model

CONFIGS = sorted(glob.glob('configs/*.py'))


def test_there_are_configs():
    assert {'configs/retinanet_vanillanet13_coco.py', 'configs/mask_rcnn_vanillanet13_coco.py'} <= set(CONFIGS)


@pytest.mark.parametrize('path', CONFIGS)
def test_neck_in_channels_are_the_backbone_out_channels(path):
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(cfg)
    assert list(cfg.model.neck.in_channels) == list(model.backbone.out_channels)


@pytest.mark.parametrize('name, lr, milestones, out_indices', [
    ('retinanet', 8e-5, [10, 11], (1, 2, 3)),
    ('mask_rcnn', 1.3e-4, [10, 12], (0, 1, 2, 3)),
])
def test_coco_configs_follow_the_paper_recipe(name, lr, milestones, out_indices):
    cfg = Config.fromfile(f'configs/{name}_vanillanet13_coco.py')
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.act_num, backbone.act_lambda) == ('VanillaNet', '13', 4, 1.0)
    assert tuple(backbone.out_indices) == out_indices
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.pretrained)
    optim = cfg.optim_wrapper
    assert optim.constructor == 'VanillaNetLayerDecayOptimWrapperConstructor'
    assert optim.optimizer == dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05)
    assert optim.paramwise_cfg == dict(decay_rate=0.6, num_layers=6)
    warmup, steps = cfg.param_scheduler
    assert (warmup.start_factor, warmup.end, warmup.by_epoch) == (0.001, 500, False)
    assert steps.milestones == milestones and cfg.train_cfg.max_epochs == 12
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.scales == [(1333, s) for s in range(480, 1025, 32)] and resize.keep_ratio
    assert cfg.train_dataloader.batch_size == 4 and cfg.auto_scale_lr.base_batch_size == 32
    assert cfg.sync_bn == 'torch'
    assert 'mmvanilla' in cfg.custom_imports.imports
