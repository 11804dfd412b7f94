"""Re-parameterization of whole models and of trained checkpoints (Chen et al. 2023, Sec. 3.2), nothing else.

Works on any model that holds VanillaNet layers: a detector (its neck and heads are kept), a classifier, a bare
backbone. Each layer merges itself (``switch_to_deploy``); here the whole model is walked. The conversion is exact
only when deep training has finished (lambda = 1); otherwise it is refused
(:func:`~mmvanilla.models.utils.check_lambda_one`). Faster CPU inference after it:
:func:`mmvanilla.ops.optimize_for_inference`.
"""
from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import nn

from .apis import load_model
from .checkpoint import save_checkpoint
from .models.utils import act_lambda_modules, check_lambda_one, get_act_lambda
from .outputs import check_output

__all__ = ['reparameterize_checkpoint', 'switch_to_deploy']


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Re-parameterizes every VanillaNet part of ``model`` in place and returns it.

    Raises:
        ValueError: the model has no VanillaNet layers.
        RuntimeError: lambda < 1 somewhere (nothing is changed then).
    """
    modules = act_lambda_modules(model)
    if not modules:
        raise ValueError(f'{type(model).__name__} has no VanillaNet layers to re-parameterize')
    check_lambda_one(get_act_lambda(model), f're-parameterize {type(model).__name__}')
    for module in modules:
        module.switch_to_deploy()
    return model


def _features(model: nn.Module, x: torch.Tensor):
    out = model.extract_feat(x) if hasattr(model, 'extract_feat') else model(x)
    return out if isinstance(out, (tuple, list)) else (out,)


@torch.no_grad()
def reparameterize_checkpoint(cfg: Config, checkpoint: str, out: str, use_ema: bool = True,
                              input_size: tuple[int, int] = (256, 256), seed: int = 0, force: bool = False) -> dict:
    """Loads a trained checkpoint, converts it to deploy form, checks outputs agree, and saves it.

    The saved file loads strictly into ``cfg`` with ``model.backbone.deploy=True``. ``out`` is checked before the
    work (see :func:`~mmvanilla.outputs.check_output`: never the input, an existing file only with ``force``) and
    written whole or not at all.

    Returns:
        dict: ``max_abs_diff``, ``max_rel_diff`` (features on a random input, training vs deploy form), ``source``
        (which weights were converted) and ``act_lambda``.

    Raises:
        FileNotFoundError, ValueError: as :func:`~mmvanilla.apis.load_model`; also a checkpoint already in deploy
            form, or an output that cannot or may not be written.
        RuntimeError: lambda < 1, or the two forms disagree (nothing is written).
    """
    logger = MMLogger.get_current_instance()
    check_output(out, force, inputs=[checkpoint], what='deploy checkpoint')
    model, source, deploy, meta = load_model(cfg, checkpoint, use_ema)
    if deploy:
        raise ValueError(f'{checkpoint} is already in deploy form: there is nothing to convert; load it with '
                         '--cfg-options model.backbone.deploy=True')
    lam = get_act_lambda(model)
    check_lambda_one(lam, f're-parameterize {checkpoint} ({source})')
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
    meta = dict(meta, act_lambda=1.0, deploy=True, converted_from=checkpoint, weights=source)
    save_checkpoint(dict(meta=meta, state_dict=model.state_dict()), out)
    return dict(max_abs_diff=abs_diff, max_rel_diff=rel_diff, source=source, act_lambda=lam)
