"""Re-parameterization of whole models and of trained checkpoints (Chen et al. 2023, Sec. 3.2).

Works on any model that holds VanillaNet layers: a detector (its neck and heads are kept), a classifier, a bare
backbone. The conversion is exact only when deep training has finished (lambda = 1); otherwise it is refused.
"""
from __future__ import annotations

import copy

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from .models.utils import act_lambda_modules, get_act_lambda


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Re-parameterizes every VanillaNet part of ``model`` in place and returns it.

    Raises:
        ValueError: the model has no VanillaNet layers.
        RuntimeError: lambda < 1 somewhere (nothing is changed then).
    """
    modules = act_lambda_modules(model)
    if not modules:
        raise ValueError(f'{type(model).__name__} has no VanillaNet layers to re-parameterize')
    lam = get_act_lambda(model)
    if lam != 1.0:
        raise RuntimeError(f'cannot re-parameterize at lambda={lam:g}: the merge is exact only at lambda=1. '
                           'Finish the deep-training schedule (DeepTrainingHook) first.')
    for module in modules:
        module.switch_to_deploy()
    return model


def state_dict_from_checkpoint(checkpoint: dict, use_ema: bool = True) -> tuple[dict, str]:
    """The model weights of an mmengine checkpoint: the EMA copy when present and ``use_ema``, else the model's."""
    ema = checkpoint.get('ema_state_dict')
    if use_ema and ema:
        # mmengine's EMAHook saves its ExponentialMovingAverage: the averaged model under 'module.'.
        return {k[len('module.'):]: v for k, v in ema.items() if k.startswith('module.')}, 'ema_state_dict'
    if 'state_dict' in checkpoint:
        return checkpoint['state_dict'], 'state_dict'
    return checkpoint, 'the file itself'


def build_model(cfg: Config, deploy: bool = False) -> nn.Module:
    """Builds ``cfg.model`` in its registry scope, without pretrained initialization."""
    cfg = copy.deepcopy(cfg)
    if deploy:
        cfg.model.backbone.deploy = True
    scope = cfg.get('default_scope', 'mmdet')
    if DefaultScope.get_current_instance() is None:
        init_default_scope(scope)
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def _features(model: nn.Module, x: torch.Tensor):
    out = model.extract_feat(x) if hasattr(model, 'extract_feat') else model(x)
    return out if isinstance(out, (tuple, list)) else (out,)


@torch.no_grad()
def reparameterize_checkpoint(cfg: Config, checkpoint: str, out: str, use_ema: bool = True,
                              input_size: tuple[int, int] = (256, 256), seed: int = 0) -> dict:
    """Loads a trained checkpoint, converts it to deploy form, checks outputs agree, and saves it.

    The saved file loads strictly into ``cfg`` with ``model.backbone.deploy=True``.

    Returns:
        dict: ``max_abs_diff``, ``max_rel_diff`` (features on a random input, training vs deploy form), ``source``
        (which weights were converted) and ``act_lambda``.
    """
    logger = MMLogger.get_current_instance()
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state_dict, source = state_dict_from_checkpoint(ckpt, use_ema)
    model = build_model(cfg).eval()
    model.load_state_dict(state_dict, strict=True)
    lam = get_act_lambda(model)
    if lam is None:
        raise ValueError(f'the model of this config ({type(model).__name__}) has no VanillaNet layers')
    if lam != 1.0:
        raise RuntimeError(
            f'{checkpoint} was saved at lambda={lam:g} ({source}); re-parameterization is exact only at lambda=1. '
            'Train until DeepTrainingHook reaches 1 (resume with a longer schedule, or set decay_epochs no larger '
            'than the epochs trained), then convert.')
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, *input_size, generator=gen) * 2 - 1
    before = _features(model, x)
    switch_to_deploy(model)
    after = _features(model, x)
    abs_diff = max((a - b).abs().max().item() for a, b in zip(before, after))
    rel_diff = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item() for a, b in zip(before, after))
    logger.info(f'converted {source} of {checkpoint}: max abs diff {abs_diff:.3e}, max rel diff {rel_diff:.3e}')
    if rel_diff > 1e-3:
        raise RuntimeError(f'deploy form disagrees with the training form (max rel diff {rel_diff:.3e}); '
                           f'{out} was not written')
    meta = dict(ckpt.get('meta', {}), act_lambda=1.0, deploy=True, converted_from=checkpoint, weights=source)
    torch.save(dict(meta=meta, state_dict=model.state_dict()), out)
    return dict(max_abs_diff=abs_diff, max_rel_diff=rel_diff, source=source, act_lambda=lam)
