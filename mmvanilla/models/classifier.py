"""VanillaNet for ImageNet classification (Chen et al. 2023): the backbone's last stage and :class:`VanillaHead`.

The paper's published classification checkpoints load into it directly (``load_state_dict``, mmengine's
``load_checkpoint`` or ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``): their keys are renamed on the way in
by :mod:`mmvanilla.models.official`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .heads import VanillaHead
from .layers import DEFAULT_NORM_CFG
from .official import adapt_official_state_dict
from .utils import check_lambda_one
from .vanillanet import VanillaNet


@MODELS.register_module()
class VanillaNetClassifier(BaseModule):
    """A VanillaNet image classifier: ``head(backbone(x)[-1])``.

    Args:
        arch (str | dict): VanillaNet variant, see :class:`VanillaNet`. Defaults to ``'5'``.
        num_classes (int): Classes; 0 for a model that returns pooled features. Defaults to 1000.
        act_num (int): n of the series activation (kernel 2n+1). Defaults to 3.
        dropout (float): Dropout before the classifier. Defaults to 0.
        act_lambda (float): Initial deep-training lambda of every layer. Defaults to 0.
        norm_cfg (dict): BatchNorm config. Defaults to BN with eps 1e-6.
        deploy (bool): Build the re-parameterized form directly. Defaults to False.
        head_hidden_channels (int | None): Hidden width of the head; None for ``num_classes``, the paper's (see
            :class:`VanillaHead`). Defaults to None.
        with_cp (bool | Sequence[int]): Activation checkpointing of each backbone block (or of those of the given
            stages) while training (see :class:`VanillaNet`). Defaults to False.
        fast_dwconv (bool): The Triton kernels on CUDA (see :class:`VanillaNet`).
            Defaults to True.
        init_cfg (dict | list[dict] | None): mmengine init config, e.g. ``dict(type='Pretrained',
            checkpoint=PATH)``. Defaults to None.

    Example:
        >>> model = VanillaNetClassifier(dict(stem_channels=8, widths=[16, 32], strides=[2, 2]), num_classes=10)
        >>> model.eval()(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(self, arch: str | dict = '5', num_classes: int = 1000, act_num: int = 3, dropout: float = 0.0,
                 act_lambda: float = 0.0, norm_cfg: dict = DEFAULT_NORM_CFG, deploy: bool = False,
                 head_hidden_channels: int | None = None, with_cp: bool | Sequence[int] = False,
                 fast_dwconv: bool = True, init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        self.backbone = VanillaNet(arch, act_num=act_num, out_indices=(-1,), norm_cfg=norm_cfg,
                                   act_lambda=act_lambda, deploy=deploy, with_cp=with_cp, fast_dwconv=fast_dwconv)
        self.num_features = self.backbone.out_channels[-1]
        self.dropout = dropout
        self.norm_cfg = norm_cfg
        self.head_hidden_channels = head_hidden_channels
        self.head = VanillaHead(self.num_features, num_classes, dropout, norm_cfg, act_lambda, deploy,
                                head_hidden_channels)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, stride 32."""
        return self.backbone(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits from the last feature map; the pooled features with ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the head with a new one of ``num_classes`` (0: none), in the backbone's form and lambda."""
        device = next(self.backbone.parameters()).device
        head = VanillaHead(self.num_features, num_classes, self.dropout, self.norm_cfg,
                           act_lambda=self.backbone.get_act_lambda(), deploy=self.backbone.deploy,
                           hidden_channels=self.head_hidden_channels)
        self.head = head.to(device)

    def get_act_lambda(self) -> float:
        """The deep-training lambda (the smallest over layers; 1 in deploy form)."""
        return min(self.backbone.get_act_lambda(), self.head.get_act_lambda())

    def set_act_lambda(self, value: float) -> None:
        """Sets lambda of every layer: 0 is ReLU, 1 the identity (then the net can be re-parameterized)."""
        for child in (self.backbone, self.head):
            child.set_act_lambda(value)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Re-parameterizes the backbone and the head. Exact; needs lambda = 1 (checked before any change)."""
        check_lambda_one(self.get_act_lambda(), 're-parameterize the classifier')
        for child in (self.backbone, self.head):
            child.switch_to_deploy()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adapt_official_state_dict(state_dict, prefix, keep_head=True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
