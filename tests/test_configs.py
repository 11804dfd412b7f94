"""The shipped configs: they load, build, and say what the paper's recipe says."""
import glob

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmvanilla  # noqa: F401
from mmvanilla.apis import build_model
from mmvanilla.deploy import switch_to_deploy
from mmvanilla.models.utils import set_act_lambda

CONFIGS = sorted(glob.glob('configs/*.py'))
DETECTION = [c for c in CONFIGS if '/retinanet_' in c or '/mask_rcnn_' in c]
CLASSIFICATION = sorted(set(CONFIGS) - set(DETECTION))


def test_there_are_configs():
    assert {'configs/retinanet_vanillanet13_coco.py', 'configs/mask_rcnn_vanillanet13_coco.py'} <= set(DETECTION)
    assert 'configs/vanillanet5_imagenet.py' in CLASSIFICATION


@pytest.mark.slow
@pytest.mark.parametrize('path', DETECTION)
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


@pytest.mark.parametrize('path', CLASSIFICATION)
def test_classification_configs_build_an_image_classifier_around_vanillanet(path):
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(cfg)
    assert type(model).__name__ == 'ImageClassifier'
    assert model.network.num_classes == cfg.model.network.num_classes
    assert [h.type for h in cfg.custom_hooks] == ['DeepTrainingHook', 'EMAHook']


@pytest.mark.parametrize('arch, lr, crop_pct', [('5', 3.5e-3, 0.875), ('6', 4.8e-3, 0.875), ('9', 3.5e-3, 0.875),
                                                ('13', 3.5e-3, 0.95)])
def test_imagenet_configs_follow_the_paper_recipe(arch, lr, crop_pct):
    cfg = Config.fromfile(f'configs/vanillanet{arch}_imagenet.py')
    network = cfg.model.network
    assert (network.arch, network.num_classes, network.act_num, network.dropout) == (arch, 1000, 3, 0.05)
    assert cfg.model.mixup == dict(mixup_alpha=0.1, cutmix_alpha=1.0) and cfg.model.label_smoothing == 0.1
    assert cfg.model.loss.type == 'BinaryCrossEntropy'
    assert cfg.optim_wrapper.optimizer == dict(type='Lamb', lr=lr, weight_decay=0.35)
    assert cfg.optim_wrapper.constructor == 'VanillaNetLayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.decay_rate == 1.0  # one lr for every layer
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.end) == ('LinearLR', 5, 'CosineAnnealingLR', 300)
    assert cfg.train_cfg.max_epochs == 300 and cfg.custom_hooks[0] == dict(type='DeepTrainingHook', decay_epochs=100)
    assert cfg.custom_hooks[1].momentum == 1e-4  # EMA decay 0.9999
    train = cfg.train_dataloader
    assert train.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024 and train.drop_last
    assert train.dataset.transform.auto_augment == 'rand-m7-mstd0.5-inc1'
    assert train.dataset.transform.color_jitter == 0.4
    assert cfg.test_dataloader.dataset.transform.crop_pct == crop_pct
    assert cfg.test_evaluator == dict(type='Accuracy', topk=(1, 5))
    assert cfg.model.channels_last, 'the fastest layout on a GPU (cuDNN takes the 7x7 depthwise convolutions)'


@pytest.mark.parametrize('name', ['retinanet_vanillanet13_coco', 'mask_rcnn_vanillanet13_coco'])
def test_coco_configs_train_in_nchw_with_the_triton_kernel_and_can_checkpoint(name):
    backbone = Config.fromfile(f'configs/{name}.py').model.backbone
    assert backbone.fast_dwconv is True and backbone.with_cp is False


def test_the_imagenet_config_builds_lamb_with_one_lr_and_without_decay_on_norms_and_biases():
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile('configs/vanillanet_tiny_synthetic_cls.py')
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(cfg)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(wrapper.optimizer).__name__ == 'Lamb'
    groups = wrapper.optimizer.param_groups
    decays = {p.ndim: group['weight_decay'] for group in groups for p in group['params']}
    assert decays[1] == 0.0 and decays[4] == cfg.optim_wrapper.optimizer.weight_decay
    assert {group['lr'] for group in groups} == {cfg.optim_wrapper.optimizer.lr}
    assert all(type(group) is dict for group in groups)  # what torch.compile traces (mmengine's compile=True)


def deploy_config(path):
    return path.replace('configs/', 'configs/deploy/').replace('.py', '_deploy.py')


def vanillanet_layers(model):
    """The fusable leaves: each has a ``deployed`` property."""
    return [m for m in model.modules() if isinstance(getattr(type(m), 'deployed', None), property)]


def test_every_config_has_a_deploy_config_and_no_other():
    assert sorted(glob.glob('configs/deploy/*.py')) == sorted(deploy_config(c) for c in CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS)
def test_a_deploy_config_is_its_config_with_the_vanillanet_in_deploy_form(path):
    expected = Config.fromfile(path).to_dict()
    part = 'backbone' if path in DETECTION else 'network'
    expected['model'][part]['deploy'] = True
    assert Config.fromfile(deploy_config(path)).to_dict() == expected


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS)
def test_a_deploy_config_builds_the_deploy_form(path):
    # On the meta device: VanillaNet-13 detectors would take seconds to allocate and initialize on the CPU. The
    # second model is what tools/test.py builds for a converted checkpoint.
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device('meta'):
        model = build_model(Config.fromfile(deploy_config(path)))
        converted_form = build_model(Config.fromfile(path), deploy=True)
    layers = vanillanet_layers(model)
    assert layers and all(layer.deployed for layer in layers)
    assert list(model.state_dict()) == list(converted_form.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize('path', [c for c in CONFIGS if '_tiny_synthetic' in c])
def test_a_deploy_config_has_the_keys_of_its_trained_model_after_switch_to_deploy(path):
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(Config.fromfile(deploy_config(path)))
        trained = build_model(Config.fromfile(path))
    set_act_lambda(trained, 1.0)
    switch_to_deploy(trained)
    assert list(model.state_dict()) == list(trained.state_dict())
