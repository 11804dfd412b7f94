import pytest
import torch
import torch.nn.functional as F

from mmvanilla.models import VanillaHead, VanillaNetClassifier

from .test_layers import randomize_bns

# Deploy-form parameters of the paper's ImageNet models (backbone and 1000-class head, act_num 3), in millions.
PAPER_PARAMS = {'5': 15.5, '6': 32.5, '9': 41.4, '13': 58.6, '13_x1_5': 127.8}


def test_head_is_pool_conv_bn_leaky_relu_conv():
    head = randomize_bns(VanillaHead(16, num_classes=5, act_lambda=0.3)).eval()
    x = torch.randn(2, 16, 7, 7)
    fc = head.fc
    pooled = x.mean((2, 3), keepdim=True)
    expected = fc.conv2.conv(F.leaky_relu(fc.conv1.bn(fc.conv1.conv(pooled)), 0.3)).flatten(1)
    assert fc.conv2.bn is None  # the paper's last conv has no BatchNorm
    torch.testing.assert_close(head(x), expected)
    assert head(x).shape == (2, 5)


def test_pre_logits_and_zero_classes_give_the_pooled_features():
    x = torch.randn(2, 16, 3, 3)
    torch.testing.assert_close(VanillaHead(16, 5).eval()(x, pre_logits=True), x.mean((2, 3)))
    head = VanillaHead(16, 0)
    assert head.fc is None and head.get_act_lambda() == 1.0
    torch.testing.assert_close(head(x), x.mean((2, 3)))


def test_head_fuses_into_one_conv_exactly_and_idempotently_at_lambda_one():
    torch.manual_seed(0)
    head = randomize_bns(VanillaHead(16, num_classes=5, act_lambda=1.0)).eval()
    x = torch.randn(2, 16, 4, 4)
    before = head(x)
    head.switch_to_deploy()
    head.switch_to_deploy()
    assert list(dict(head.named_parameters())) == ['fc.conv.weight', 'fc.conv.bias']
    assert head.fc.conv.kernel_size == (1, 1)
    torch.testing.assert_close(head(x), before, rtol=1e-5, atol=1e-5)


def test_head_refuses_to_fuse_below_lambda_one():
    head = VanillaHead(16, num_classes=5, act_lambda=0.5)
    with pytest.raises(RuntimeError, match='lambda=0.5'):
        head.switch_to_deploy()
    assert head.fc.conv is None  # unchanged


def test_deploy_built_head_has_the_keys_of_a_fused_one():
    fused = VanillaHead(16, 5, act_lambda=1.0)
    fused.switch_to_deploy()
    assert fused.state_dict().keys() == VanillaHead(16, 5, deploy=True).state_dict().keys()


@pytest.mark.parametrize('num_classes, dropout', [(-1, 0.0), (2.5, 0.0), (10, 1.0)])
def test_bad_arguments_are_refused(num_classes, dropout):
    with pytest.raises(ValueError, match='num_classes|dropout'):
        VanillaHead(16, num_classes, dropout=dropout)


@pytest.mark.parametrize('arch', list(PAPER_PARAMS))
def test_deploy_form_parameter_counts_match_the_paper(arch):
    with torch.device('meta'):  # counts only: no memory, no initialization cost
        model = VanillaNetClassifier(arch, num_classes=1000, deploy=True)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(PAPER_PARAMS[arch], rel=0.005)
