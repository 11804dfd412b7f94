"""VanillaNet (Chen et al. 2023) in timm: ``timm.create_model('vanillanet_5')`` ... ``'vanillanet_13_x1_5_ada_pool'``.

Importing :mod:`mmvanilla` registers them. The model is :class:`VanillaNetClassifier` with timm's interface added
(``features_only``, ``forward_intermediates``, ``reset_classifier``, ``timm.utils.reparameterize_model``); the arch
table stays in :mod:`mmvanilla.models.vanillanet`. The pretrained configs give the paper's evaluation settings and
the names of its published files. Nothing can be downloaded: put a file where ``file`` points, or pass
``pretrained_cfg_overlay=dict(file=PATH)``; the paper's checkpoints load as they are, EMA weights first.
"""
from __future__ import annotations

import math
import os

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from .classifier import VanillaNetClassifier
from .layers import DEFAULT_NORM_CFG
from .official import adapt_official_state_dict, check_checkpoint_form
from .vanillanet import ARCH_SETTINGS, resolve_arch


class TimmVanillaNet(VanillaNetClassifier):
    """:class:`VanillaNetClassifier` with timm's model interface.

    Args:
        arch (str | dict): VanillaNet variant. Defaults to ``'5'``.
        num_classes (int): Classes; 0 for pooled features. Defaults to 1000.
        in_chans (int): Input channels; VanillaNet's stem takes 3. Defaults to 3.
        act_num (int): n of the series activation (kernel 2n+1). Defaults to 3.
        drop_rate (float): Dropout before the classifier. Defaults to 0.
        act_lambda (float): Initial deep-training lambda. Defaults to 0.
        norm_cfg (dict): BatchNorm config. Defaults to BN with eps 1e-6.
        deploy (bool): Build the re-parameterized form directly. Defaults to False.
        fast_dwconv (bool): The Triton kernel of the series activation on CUDA (see :class:`VanillaNet`).
            Defaults to True.

    Example:
        >>> import timm, torch
        >>> model = timm.create_model('vanillanet_5', num_classes=10, act_num=4).eval()
        >>> model(torch.rand(1, 3, 64, 64)).shape, model.feature_info[-1]['reduction']
        (torch.Size([1, 10]), 32)
    """

    def __init__(self, arch: str | dict = '5', num_classes: int = 1000, in_chans: int = 3, act_num: int = 3,
                 drop_rate: float = 0.0, act_lambda: float = 0.0, norm_cfg: dict = DEFAULT_NORM_CFG,
                 deploy: bool = False, fast_dwconv: bool = True):
        if in_chans != 3:
            raise ValueError(f'VanillaNet takes 3-channel images, got in_chans={in_chans}')
        super().__init__(arch, num_classes, act_num, drop_rate, act_lambda, norm_cfg, deploy,
                         fast_dwconv=fast_dwconv)
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.head_hidden_size = self.num_features
        self.feature_info = self._feature_info()

    def _feature_info(self) -> list[dict]:
        backbone, arch = self.backbone, self.backbone.arch
        info = []
        for stage, end in enumerate(backbone.stage_ends):
            # Nominal reduction: the stem's stride times the block strides (adaptive pools count as their stride).
            reduction = arch['stem_stride'] * math.prod(arch['strides'][:end + 1])
            module = 'backbone.stem' if end < 0 else f'backbone.blocks.{end}'
            info.append(dict(num_chs=backbone.stage_channels[stage], reduction=reduction, module=module))
        return info

    def get_classifier(self) -> nn.Module:
        return self.head.fc if self.head.fc is not None else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, 'avg'):
            raise ValueError(f"VanillaNet pools by average only (global_pool='avg'), got {global_pool!r}")
        super().reset_classifier(num_classes)

    def forward_intermediates(self, x: Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (strides 4, 8, 16, 32) as timm's feature API wants them.

        Args:
            x (Tensor): Images.
            indices (int | list[int] | None): Stages to return (an int n: the last n). Defaults to all.
            norm (bool): Unused (VanillaNet has no final norm). Defaults to False.
            stop_early (bool): Unused (the stages come from one backbone pass). Defaults to False.
            output_fmt (str): Only ``'NCHW'``. Defaults to ``'NCHW'``.
            intermediates_only (bool): Return only the stage outputs. Defaults to False.

        Returns:
            list[Tensor] | tuple[Tensor, list[Tensor]]: The stage outputs, preceded by the last feature map unless
            ``intermediates_only``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"VanillaNet features are NCHW, got output_fmt={output_fmt!r}")
        take, _ = feature_take_indices(len(self.feature_info), indices)
        backbone = self.backbone
        # The backbone returns the stages in out_indices; ask it for these ones (and the last) for this call only,
        # so the plain forward keeps returning just the last stage (no early feature maps held in memory).
        last = backbone.num_stages - 1
        saved = backbone.out_indices
        backbone.out_indices = tuple(sorted(set(take) | {last}))
        try:
            stages = dict(zip(backbone.out_indices, backbone(x)))
        finally:
            backbone.out_indices = saved
        intermediates = [stages[i] for i in take]
        return intermediates if intermediates_only else (stages[last], intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drops the classifier (for ``features_only``); the backbone is kept whole."""
        take, _ = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.reset_classifier(0)
        return take

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise lr decay: the stem, then one group per block."""
        return dict(stem=r'^backbone\.stem', blocks=r'^backbone\.blocks\.(\d+)')

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch for activation checkpointing: the backbone's ``with_cp``."""
        self.backbone.with_cp = enable

    def no_weight_decay(self) -> set:
        return set()


def checkpoint_filter_fn(state_dict: dict, model: TimmVanillaNet) -> dict:
    """timm's ``pretrained_filter_fn``: the paper's names to ours; drops head tensors of another class count."""
    state_dict = dict(state_dict)
    adapt_official_state_dict(state_dict, keep_head=True)
    # Before timm looks for the stem conv by name, which differs between the forms.
    check_checkpoint_form(state_dict, 'backbone.', model.backbone.deploy)
    own = model.state_dict()
    return {k: v for k, v in state_dict.items()
            if not (k.startswith('head.') and (k not in own or own[k].shape != v.shape))}


def _cfg(name: str, crop_pct: float = 0.875, pool_size: tuple[int, int] = (7, 7), **kwargs) -> dict:
    return {**dict(url='', hf_hub_id='', file=f'{name}.pth', num_classes=1000, input_size=(3, 224, 224),
                   pool_size=pool_size, crop_pct=crop_pct, interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN,
                   std=IMAGENET_DEFAULT_STD, first_conv='backbone.stem.layer.conv1.conv', classifier='head.fc',
                   paper_ids='arXiv:2305.12972', origin_url='https://github.com/huawei-noah/VanillaNet'),
            **kwargs}


def _crop_pct(arch: str) -> float:
    # The paper evaluates VanillaNet-5..11 with crop 0.875, the larger ones (12, 13, 13x1.5) with 0.95.
    return 0.875 if arch.isdigit() and int(arch) <= 11 else 0.95


__all__ = ['TimmVanillaNet', 'checkpoint_filter_fn', 'register_vanillanet']  # register_model adds the models
default_cfgs: dict = {}


def _check_pretrained_file(name: str, kwargs: dict) -> None:
    """Names the missing weights file of ``pretrained=True`` (timm raises a FileNotFoundError without a message)."""
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    cfg = kwargs.get('pretrained_cfg')
    cfg = cfg if isinstance(cfg, dict) else vars(cfg) if cfg is not None else {}
    if overlay.get('state_dict') is not None or cfg.get('state_dict') is not None:
        return
    file = overlay.get('file') or cfg.get('file') or default_cfgs[name].default.file
    if not os.path.isfile(file):
        raise FileNotFoundError(f'{name}: pretrained=True loads the weights file {file}, which does not exist '
                                '(nothing is downloaded): put the paper\'s file there, or pass '
                                f'pretrained_cfg_overlay=dict(file=\'PATH/TO/{name}.pth\')')


def register_vanillanet(name: str, arch: str | dict, **pretrained_cfg) -> None:
    """Registers a VanillaNet variant with timm under ``name``; the paper's ones are registered on import.

    The entry point becomes an attribute of this module, like timm's own (``timm_models.vanillanet_5``).

    Args:
        name (str): The timm model name.
        arch (str | dict): The arch (see :class:`VanillaNet`).
        **pretrained_cfg: Entries of the pretrained config (``file``, ``crop_pct``, ``pool_size``...); the rest
            as for the paper's variants (224 input, ImageNet mean and std, crop 0.875, ``file=NAME.pth``).

    Example:
        >>> import timm, torch
        >>> register_vanillanet('vanillanet_tiny', dict(stem_channels=8, widths=[16, 32, 64], strides=[2, 2, 2]))
        >>> timm.create_model('vanillanet_tiny', num_classes=3).eval()(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3])
    """
    resolve_arch(arch)  # fail at registration, not at creation
    default_cfgs.update(generate_default_cfgs({name: _cfg(name, **pretrained_cfg)}))

    def create(pretrained: bool = False, **kwargs) -> TimmVanillaNet:
        if pretrained:
            _check_pretrained_file(name, kwargs)
        return build_model_with_cfg(TimmVanillaNet, name, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                    feature_cfg=dict(feature_cls='getter', out_indices=(0, 1, 2, 3)),
                                    arch=arch, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f'VanillaNet arch {arch!r} (Chen et al. 2023); see :class:`TimmVanillaNet` for the kwargs.'
    globals()[name] = create
    register_model(create)


for _arch in ARCH_SETTINGS:
    register_vanillanet(f'vanillanet_{_arch}', _arch, crop_pct=_crop_pct(_arch),
                        pool_size=(10, 10) if 'ada_pool' in _arch else (7, 7))
