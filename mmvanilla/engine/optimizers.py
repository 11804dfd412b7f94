"""Layer-wise learning-rate decay for VanillaNet, as in the paper's detection fine-tuning recipe.

The stem is layer 0, backbone block ``i`` is layer ``i // 2 + 1``, and everything else (neck, heads) is layer
``num_layers + 1``. A parameter of layer ``l`` gets ``lr * decay_rate ** (num_layers + 1 - l)``; norms and biases
get no weight decay.

Also registers timm's LAMB, the paper's ImageNet optimizer, as ``dict(type='Lamb', ...)`` in mmdet's ``OPTIMIZERS``.
"""
from __future__ import annotations

import re

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from timm.optim import Lamb
from torch import nn

OPTIMIZERS.register_module(module=Lamb)

_BLOCK = re.compile(r'(?:^|\.)backbone\.blocks\.(\d+)\.')
_STEM = re.compile(r'(?:^|\.)backbone\.stem\.')


def vanillanet_layer_id(param_name: str, num_layers: int) -> int:
    """The decay layer of a parameter named as in a detector or classifier with a VanillaNet ``backbone``."""
    if _STEM.search(param_name):
        return 0
    block = _BLOCK.search(param_name)
    if block:
        return min(int(block.group(1)) // 2 + 1, num_layers)
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class VanillaNetLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Groups parameters by VanillaNet layer with a decayed learning rate and no decay on norms and biases.

    ``paramwise_cfg`` takes ``decay_rate`` (e.g. 0.6) and ``num_layers`` (e.g. 6) and nothing else.

    Example:
        >>> optim_wrapper = dict(
        ...     constructor='VanillaNetLayerDecayOptimWrapperConstructor',
        ...     optimizer=dict(type='AdamW', lr=8e-5, betas=(0.9, 0.999), weight_decay=0.05),
        ...     paramwise_cfg=dict(decay_rate=0.6, num_layers=6))
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        # mmengine builds the optimizer from a ConfigDict, which makes each param group a ConfigDict; dynamo traces
        # an optimizer's step over plain dicts only (mmengine's compile=True stopped with 'UserDefinedDictVariable'
        # object has no attribute 'items').
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return optim_wrapper

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - {'decay_rate', 'num_layers'}
        if unknown or 'decay_rate' not in cfg or 'num_layers' not in cfg:
            raise KeyError(f'{type(self).__name__} takes paramwise_cfg=dict(decay_rate=..., num_layers=...); '
                           f'got keys {sorted(self.paramwise_cfg)}')
        decay_rate, num_layers = float(cfg['decay_rate']), int(cfg['num_layers'])
        groups: dict[tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith('.bias')
            layer = vanillanet_layer_id(name, num_layers)
            group = groups.setdefault((layer, no_decay), dict(
                params=[], lr=self.base_lr * decay_rate ** (num_layers + 1 - layer),
                weight_decay=0.0 if no_decay else self.base_wd, layer_id=layer))
            group['params'].append(param)
        params.extend(groups[key] for key in sorted(groups))
        MMLogger.get_current_instance().info(
            'layer-wise lr decay: ' + ', '.join(
                f'layer {layer}{" (no decay)" if nd else ""}: lr x{decay_rate ** (num_layers + 1 - layer):.4g}, '
                f'{len(groups[(layer, nd)]["params"])} tensors' for layer, nd in sorted(groups)))
