import pytest
import torch
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from torch import nn

import mmvanilla  # noqa: F401
from mmvanilla.engine.optimizers import vanillanet_layer_id
from mmvanilla.models import VanillaNet

ARCH = dict(stem_channels=8, widths=[8, 16, 16, 16, 32], strides=[1, 2, 2, 1, 2])


class Detector(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = VanillaNet(ARCH, frozen_stages=0)
        self.neck = nn.Conv2d(32, 8, 1)
        self.head = nn.Sequential(nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))


def build(paramwise_cfg, lr=1e-3, weight_decay=0.05):
    with DefaultScope.overwrite_default_scope('mmdet'):
        # a ConfigDict, as a runner passes it from the config
        return OPTIM_WRAPPER_CONSTRUCTORS.build(ConfigDict(
            type='VanillaNetLayerDecayOptimWrapperConstructor', paramwise_cfg=paramwise_cfg,
            optim_wrapper_cfg=dict(type='OptimWrapper',
                                   optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay))))


def group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g['params']))


def test_layer_ids_follow_the_paper_stem_zero_blocks_in_pairs_rest_last():
    assert vanillanet_layer_id('backbone.stem.layer.conv1.conv.weight', 6) == 0
    assert [vanillanet_layer_id(f'backbone.blocks.{i}.layer.conv.weight', 6) for i in range(11)] == \
        [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert vanillanet_layer_id('neck.lateral_convs.0.conv.weight', 6) == 7
    assert vanillanet_layer_id('bbox_head.retina_cls.bias', 6) == 7


def test_groups_get_decayed_lr_and_no_weight_decay_on_norms_and_biases():
    model = Detector()
    optimizer = build(dict(decay_rate=0.6, num_layers=6))(model).optimizer
    block3 = model.backbone.blocks[3].layer.conv1.conv
    cases = [
        (block3.weight, 1e-3 * 0.6 ** (7 - 2), 0.05),
        (block3.bias, 1e-3 * 0.6 ** (7 - 2), 0.0),
        (model.backbone.blocks[3].act.bn.weight, 1e-3 * 0.6 ** (7 - 2), 0.0),
        (model.backbone.blocks[3].act.conv.weight, 1e-3 * 0.6 ** (7 - 2), 0.05),
        (model.neck.weight, 1e-3, 0.05),
        (model.head[1].weight, 1e-3, 0.0),
    ]
    for param, lr, wd in cases:
        group = group_of(optimizer, param)
        assert group['lr'] == pytest.approx(lr) and group['weight_decay'] == wd


def test_frozen_parameters_are_left_out_and_every_trainable_one_is_in_exactly_one_group():
    model = Detector()
    optimizer = build(dict(decay_rate=0.6, num_layers=6))(model).optimizer
    grouped = [p for g in optimizer.param_groups for p in g['params']]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len({id(p) for p in grouped}) == len(trainable)
    assert not any(p is q for p in model.backbone.stem.parameters() for q in grouped)


def test_unknown_paramwise_keys_are_refused():
    with pytest.raises(KeyError, match='decay_rate=..., num_layers='):
        build(dict(decay_rate=0.6, num_layers=6, decay_type='layer_wise'))(Detector())


@pytest.mark.slow
def test_param_groups_are_plain_dicts_so_that_torch_compile_traces_the_step():
    # mmengine builds the optimizer from a ConfigDict, which makes each group a ConfigDict; dynamo stopped on those
    # ('UserDefinedDictVariable' object has no attribute 'items'), so mmengine's compile=True failed.
    model = Detector()
    optimizer = build(dict(decay_rate=0.6, num_layers=6))(model).optimizer
    assert all(type(group) is dict for group in optimizer.param_groups)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in params]
    torch.compile(optimizer.step, backend='eager')()
    assert all(not torch.equal(p, b) for p, b in zip(params, before))
