"""The ImageNet classification head of VanillaNet (Chen et al. 2023, Sec. 3.1).

Global average pooling, then two 1x1 convolutions with the deep-training activation between them: the first
(with BatchNorm) maps the features to ``num_classes`` channels, the second (without) mixes the classes. At
lambda = 1 they merge, like every other VanillaNet layer, into one 1x1 convolution: a linear classifier.
"""
from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor, nn

from .layers import DEFAULT_NORM_CFG, DeepTrainingConv


@MODELS.register_module()
class VanillaHead(nn.Module):
    """Pool, dropout, and the deep-training classifier ``conv1x1+BN -> leaky_relu(lambda) -> conv1x1``.

    The paper's hidden width is ``num_classes`` (1000 on ImageNet). With few classes that is a narrow, badly
    conditioned bottleneck (measured here with 4 classes: in 60 AdamW steps on one batch a small net's loss barely
    left chance level; with 256 hidden channels it fitted the batch), so ``hidden_channels`` may widen it. The
    deploy form is one 1x1 conv either way.

    Args:
        in_channels (int): Channels of the last feature map.
        num_classes (int): Classes; 0 for no classifier (the head then returns the pooled features).
        dropout (float): Dropout probability after pooling. Defaults to 0.
        norm_cfg (dict): BatchNorm config of the first convolution. Defaults to BN with eps 1e-6.
        act_lambda (float): Initial deep-training lambda. Defaults to 0.
        deploy (bool): Build the re-parameterized form (one 1x1 convolution) directly. Defaults to False.
        hidden_channels (int | None): Channels between the two convolutions; None for ``num_classes``, the paper's.
            Defaults to None.

    Example:
        >>> import torch
        >>> head = VanillaHead(64, num_classes=10).eval()
        >>> head(torch.rand(2, 64, 7, 7)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0,
                 norm_cfg: dict = DEFAULT_NORM_CFG, act_lambda: float = 0.0, deploy: bool = False,
                 hidden_channels: int | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must lie in [0, 1), got {dropout}')
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.hidden_channels = hidden_channels or num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = None
        if num_classes > 0:
            self.fc = DeepTrainingConv(in_channels, num_classes, hidden_channels=self.hidden_channels,
                                       norm_cfg=norm_cfg, out_norm_cfg=None, act_lambda=act_lambda, deploy=deploy)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits ``(N, num_classes)``; with ``pre_logits`` (or no classifier) the pooled features ``(N, C)``."""
        x = self.drop(self.pool(x))
        if pre_logits or self.fc is None:
            return x.flatten(1)
        return self.fc(x).flatten(1)

    def get_act_lambda(self) -> float:
        """Lambda of the classifier; 1 (nothing to anneal) without one."""
        return 1.0 if self.fc is None else self.fc.get_act_lambda()

    def set_act_lambda(self, value: float) -> None:
        if self.fc is not None:
            self.fc.set_act_lambda(value)

    def switch_to_deploy(self) -> None:
        """Merges the two convolutions into one. Exact; needs lambda = 1; idempotent."""
        if self.fc is not None:
            self.fc.switch_to_deploy()
