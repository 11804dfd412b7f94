"""Model-wide access to the deep-training lambda (Chen et al. 2023, Sec. 3.2: deep training strategy).

A model (a detector, a classifier, a wrapper, an EMA copy) may hold one or several modules with their own
``set_act_lambda``, e.g. a detector's VanillaNet backbone, or a teacher and a student. These helpers find the
outermost such modules and read or set their lambda, so hooks and tools share one walk.
"""
from __future__ import annotations

from torch import nn

__all__ = ['act_lambda_modules', 'check_lambda_one', 'get_act_lambda', 'set_act_lambda']

#: Why a merge needs lambda = 1, and how to get there: the one message of :func:`check_lambda_one`.
LAMBDA_ONE_NEEDED = (
    'VanillaNet\'s layers merge exactly only at lambda=1. Train until DeepTrainingHook reaches 1 (resume with a longer '
    'schedule, or set decay_epochs no larger than the epochs trained), or set_act_lambda(1.0) and '
    'fine-tune; then re-parameterize (tools/reparameterize.py converts a checkpoint).')


def check_lambda_one(lam: float | None, action: str) -> None:
    """The precondition of every merge of deep-training layers (re-parameterizing, exporting, converting).

    Args:
        lam (float | None): The lambda found (None: no deep-training layers, nothing to check).
        action (str): What was asked, for the message, e.g. ``'re-parameterize VanillaNet'``.

    Raises:
        RuntimeError: ``lam < 1``; the message names the action, lambda and the fix.

    Example:
        >>> check_lambda_one(1.0, 'export the model')
        >>> check_lambda_one(0.5, 'export the model')
        Traceback (most recent call last):
        ...
        RuntimeError: cannot export the model at lambda=0.5: VanillaNet's layers merge exactly only at lambda=1. ...
    """
    if lam is not None and lam < 1.0:
        raise RuntimeError(f'cannot {action} at lambda={lam:g}: {LAMBDA_ONE_NEEDED}')


def act_lambda_modules(model: nn.Module) -> list[nn.Module]:
    """The outermost modules of ``model`` (itself included) that have ``set_act_lambda``.

    A module that has it owns its descendants' lambda, so the walk does not descend into it.

    Args:
        model (nn.Module): Any model; wrappers (DDP, EMA) are walked through like other modules.

    Returns:
        list[nn.Module]: The modules, in ``children()`` order; empty if there is none.
    """
    if callable(getattr(model, 'set_act_lambda', None)):
        return [model]
    return [found for child in model.children() for found in act_lambda_modules(child)]


def set_act_lambda(model: nn.Module, value: float) -> int:
    """Sets the deep-training lambda of every module found by :func:`act_lambda_modules`.

    Args:
        model (nn.Module): The model.
        value (float): Lambda in [0, 1]: 0 is the full non-linearity, 1 the identity.

    Returns:
        int: How many modules were set (0 if the model has no deep-training layers).

    Example:
        >>> import torch
        >>> from mmvanilla.models import VanillaNet
        >>> backbone = VanillaNet(dict(stem_channels=8, widths=[16], strides=[2]), out_indices=(1,))
        >>> model = torch.nn.ModuleDict(dict(backbone=backbone, head=torch.nn.Linear(16, 2)))
        >>> set_act_lambda(model, 0.25), get_act_lambda(model)
        (1, 0.25)
    """
    modules = act_lambda_modules(model)
    for module in modules:
        module.set_act_lambda(value)
    return len(modules)


def get_act_lambda(model: nn.Module) -> float | None:
    """The deep-training lambda of ``model``: the smallest over the modules found by :func:`act_lambda_modules`.

    Reads the values back from the modules (a host sync on GPU): call it once per epoch or evaluation, not per
    iteration.

    Args:
        model (nn.Module): The model.

    Returns:
        float | None: Lambda, or None if the model has no deep-training layers.
    """
    values = [float(module.get_act_lambda()) for module in act_lambda_modules(model)]
    return min(values) if values else None
