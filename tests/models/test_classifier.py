from types import SimpleNamespace

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope

import mmvanilla  # noqa: F401  (registers the models)
from mmvanilla.deploy import switch_to_deploy
from mmvanilla.engine import DeepTrainingHook
from mmvanilla.models import VanillaNetClassifier
from mmvanilla.models.utils import get_act_lambda, set_act_lambda

from .test_layers import randomize_bns

TINY = dict(stem_channels=8, widths=[16, 32, 64], strides=[2, 2, 2])


def test_classifier_returns_logits_from_the_last_stage():
    model = VanillaNetClassifier(TINY, num_classes=7, act_num=2).eval()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 7)
    features = model.forward_features(x)
    assert features.shape == (2, 64, 2, 2)
    torch.testing.assert_close(model.forward_head(features), logits)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    assert model.num_classes == 7 and model.num_features == 64


def test_classifier_builds_from_mmdet_registry():
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(dict(type='VanillaNetClassifier', arch=TINY, num_classes=3, dropout=0.1))
    assert isinstance(model, VanillaNetClassifier) and model.num_classes == 3


def test_lambda_is_shared_by_backbone_and_head_through_the_model_wide_helpers():
    model = VanillaNetClassifier(TINY, num_classes=3)
    assert set_act_lambda(torch.nn.ModuleDict(dict(model=model)), 0.25) == 1
    assert get_act_lambda(model) == 0.25
    assert model.backbone.get_act_lambda() == model.head.get_act_lambda() == 0.25


def test_deep_training_hook_anneals_the_classifier():
    model = VanillaNetClassifier(TINY, num_classes=3)
    runner = SimpleNamespace(model=model, epoch=2, hooks=[])
    DeepTrainingHook(decay_epochs=4).before_train_epoch(runner)
    assert model.backbone.get_act_lambda() == model.head.get_act_lambda() == 0.5


def test_switch_to_deploy_is_exact_and_idempotent():
    torch.manual_seed(0)
    model = randomize_bns(VanillaNetClassifier(TINY, num_classes=5, act_num=2, act_lambda=1.0)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        switch_to_deploy(model)
        model.switch_to_deploy()
        after = model(x)
    assert ((after - before).abs().max() / before.abs().max()).item() < 1e-4
    deployed = VanillaNetClassifier(TINY, num_classes=5, act_num=2, deploy=True)
    assert model.state_dict().keys() == deployed.state_dict().keys()


def test_switch_to_deploy_below_lambda_one_changes_nothing():
    model = VanillaNetClassifier(TINY, num_classes=5)
    model.backbone.set_act_lambda(1.0)  # the head stays at 0
    keys = model.state_dict().keys()
    with pytest.raises(RuntimeError, match='lambda=0'):
        model.switch_to_deploy()
    assert model.state_dict().keys() == keys


def test_reset_classifier_keeps_form_and_lambda():
    model = VanillaNetClassifier(TINY, num_classes=5, act_lambda=0.5)
    model.reset_classifier(3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3) and model.head.get_act_lambda() == 0.5
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    model.set_act_lambda(1.0)
    model.switch_to_deploy()
    model.reset_classifier(4)
    assert model.head.fc.deployed
