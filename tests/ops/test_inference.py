"""optimize_for_inference (mmvanilla/ops/inference.py): faster inference modules, same outputs, same state dict."""
import copy

import pytest
import torch
from torch import nn

from mmvanilla.models import SeriesActivation, VanillaNet
from mmvanilla.models.classifier import VanillaNetClassifier
from mmvanilla.models.layers import RectifiedSeriesActivation
from mmvanilla.ops import PrepackedConv2d, StridedMaxPool2d, optimize_for_inference

from ..models.test_layers import randomize_bns

ARCH = dict(stem_channels=8, widths=[16, 32, 32], strides=[2, 2, 1])


def relative_error(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def trained_deploy_classifier():
    model = randomize_bns(VanillaNetClassifier(ARCH, num_classes=10)).eval()
    model.set_act_lambda(1.0)
    model.switch_to_deploy()
    return model


@pytest.mark.parametrize('shape', [(1, 3, 64, 64), (2, 3, 67, 93)])
def test_outputs_and_state_dict_are_unchanged(shape):
    model = trained_deploy_classifier()
    fast = optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(shape)
    with torch.inference_mode():
        assert relative_error(model(x), fast(x)) < 1e-4
    assert list(fast.state_dict()) == list(model.state_dict())
    kinds = {type(m) for m in fast.modules()}
    assert PrepackedConv2d in kinds and StridedMaxPool2d in kinds and RectifiedSeriesActivation in kinds
    assert not any(type(m) in (nn.MaxPool2d, SeriesActivation) for m in fast.modules())


def test_each_block_rectifies_inside_its_conv_and_max_pools_after():
    model = trained_deploy_classifier()
    fast = optimize_for_inference(copy.deepcopy(model))
    blocks = [fast.backbone.stem, *fast.backbone.blocks]
    assert all(b.layer.conv.relu and type(b.act) is RectifiedSeriesActivation for b in blocks)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        stem_out = fast.backbone.stem.pool(fast.backbone.stem.layer(x))
    assert stem_out.min() == 0  # rectified before the series activation's depthwise conv
    with torch.inference_mode():
        again = optimize_for_inference(fast)  # a second call changes nothing
        assert relative_error(model(x), again(x)) < 1e-4


def test_training_form_keeps_its_series_activations():
    model = randomize_bns(VanillaNetClassifier(ARCH, num_classes=10)).eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    assert not any(type(m) is RectifiedSeriesActivation for m in fast.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert relative_error(model(x), fast(x)) < 1e-4
    with pytest.raises(ValueError, match='switch_to_deploy'):
        RectifiedSeriesActivation(model.backbone.blocks[0].act)


def test_backbone_features_of_every_stage_are_unchanged():
    model = randomize_bns(VanillaNet(ARCH, out_indices=(0, 1, 2), act_lambda=1.0)).eval()
    model.switch_to_deploy()
    fast = optimize_for_inference(copy.deepcopy(model))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(model(x), fast(x)):
            assert a.shape == b.shape and relative_error(a, b) < 1e-4


def test_other_models_keep_their_outputs_and_overlapping_pools():
    from mmdet.models.backbones import ResNet
    resnet = ResNet(depth=18, out_indices=(3,))
    resnet.eval()
    fast = optimize_for_inference(copy.deepcopy(resnet))
    assert type(fast.maxpool) is nn.MaxPool2d  # 3x3 stride 2: overlapping windows are left alone
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert relative_error(resnet(x)[0], fast(x)[0]) < 1e-4


def test_loading_new_weights_after_optimizing_is_taken_into_account():
    model = optimize_for_inference(trained_deploy_classifier())
    other = trained_deploy_classifier()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model(x)  # packs the old weights
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert relative_error(other(x), model(x)) < 1e-4
        assert relative_error(other(x), copy.deepcopy(model)(x)) < 1e-4  # a used model still copies


@pytest.mark.parametrize('kernel', [2, 3])
def test_strided_max_pool_is_bit_identical_to_max_pool(kernel):
    x = torch.randn(2, 5, 13, 17)
    x[0, 0, :3, :3] = float('nan')
    reference = nn.MaxPool2d(kernel)
    pool = StridedMaxPool2d(kernel)
    assert StridedMaxPool2d.applies_to(reference) and not StridedMaxPool2d.applies_to(nn.MaxPool2d(3, 2, 1))
    with torch.no_grad():
        assert torch.allclose(reference(x), pool(x), rtol=0, atol=0, equal_nan=True)


def test_with_gradients_the_modules_fall_back_to_the_ordinary_ones():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    fast = PrepackedConv2d(copy.deepcopy(conv))
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    conv(x).sum().backward()
    expected, x.grad = x.grad, None
    fast(x).sum().backward()
    assert torch.allclose(x.grad, expected) and torch.allclose(fast.weight.grad, conv.weight.grad)
    rectified = PrepackedConv2d(copy.deepcopy(conv), relu=True)
    assert torch.allclose(rectified(x), torch.relu(conv(x)))
    pool_in = torch.randn(1, 2, 4, 4, requires_grad=True)
    StridedMaxPool2d(2)(pool_in).sum().backward()
    assert pool_in.grad.sum() == 2 * 2 * 2  # one gradient per window, as nn.MaxPool2d gives
