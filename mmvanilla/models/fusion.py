"""Pure tensor math for re-parameterization (VanillaNet, Chen et al. 2023, Sec. 3.2).

Each function takes tensors and returns new tensors; none holds or mutates module state.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def fuse_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.modules.batchnorm._NormBase) -> tuple[Tensor, Tensor]:
    """Folds an eval-mode BatchNorm that follows a convolution into the convolution.

    ``bn(conv(x)) == conv'(x)`` with ``conv'`` having the returned weight and bias. Works for any convolution whose
    weight has the output channels first (dense, grouped, depthwise).

    Args:
        weight (Tensor): Convolution weight, shape ``(C_out, C_in / groups, kh, kw)``.
        bias (Tensor | None): Convolution bias of shape ``(C_out,)``, or None.
        bn (nn.Module): A BatchNorm (or SyncBatchNorm) with running statistics over ``C_out`` channels.

    Returns:
        tuple[Tensor, Tensor]: The fused weight and bias.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError('cannot fold a BatchNorm without running statistics (track_running_stats=False)')
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    fused_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    fused_bias = beta + (bias - bn.running_mean) * scale
    return fused_weight, fused_bias


def merge_conv_1x1(weight1: Tensor, bias1: Tensor, weight2: Tensor, bias2: Tensor) -> tuple[Tensor, Tensor]:
    """Merges ``conv2(conv1(x))`` into one convolution, where ``conv2`` is a dense 1x1 convolution.

    Exact because nothing non-linear stands between them (deep training at lambda = 1). ``conv1`` may have any
    kernel size and stride; the merged convolution keeps them.

    Args:
        weight1 (Tensor): First weight, ``(C_mid, C_in, kh, kw)``.
        bias1 (Tensor): First bias, ``(C_mid,)``.
        weight2 (Tensor): 1x1 weight, ``(C_out, C_mid, 1, 1)``.
        bias2 (Tensor): Second bias, ``(C_out,)``.

    Returns:
        tuple[Tensor, Tensor]: Weight ``(C_out, C_in, kh, kw)`` and bias ``(C_out,)``.
    """
    if weight2.shape[2:] != (1, 1):
        raise ValueError(f'the second convolution must be 1x1, got kernel {tuple(weight2.shape[2:])}')
    w2 = weight2.flatten(1)
    weight = torch.einsum('om,mihw->oihw', w2, weight1)
    bias = w2 @ bias1 + bias2
    return weight, bias
