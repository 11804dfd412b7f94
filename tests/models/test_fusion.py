import pytest
import torch
from torch import nn

from mmvanilla.models import fuse_conv_bn, merge_conv_1x1


def randomized_bn(channels):
    bn = nn.BatchNorm2d(channels, eps=1e-6)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    return bn.eval()


@pytest.mark.parametrize('groups, bias', [(1, True), (1, False), (6, False)])
def test_fuse_conv_bn_equals_conv_then_bn(groups, bias):
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups, bias=bias)
    bn = randomized_bn(6)
    x = torch.randn(2, 6, 9, 9)
    weight, fused_bias = fuse_conv_bn(conv.weight, conv.bias, bn)
    fused = nn.functional.conv2d(x, weight, fused_bias, padding=1, groups=groups)
    torch.testing.assert_close(fused, bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_merge_conv_1x1_equals_the_two_convs_in_series():
    first = nn.Conv2d(3, 5, kernel_size=4, stride=4)
    second = nn.Conv2d(5, 7, kernel_size=1)
    x = torch.randn(2, 3, 16, 16)
    weight, bias = merge_conv_1x1(first.weight, first.bias, second.weight, second.bias)
    merged = nn.functional.conv2d(x, weight, bias, stride=4)
    torch.testing.assert_close(merged, second(first(x)), rtol=1e-5, atol=1e-5)


def test_merge_refuses_a_second_conv_that_is_not_1x1():
    w = torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match='1x1'):
        merge_conv_1x1(w, torch.zeros(4), w, torch.zeros(4))
