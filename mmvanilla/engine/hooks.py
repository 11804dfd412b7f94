"""The deep-training schedule of VanillaNet (Chen et al. 2023, Sec. 3.2).

Each layer starts as ``conv -> leaky_relu(lambda) -> conv`` with lambda = 0 (a ReLU) and lambda is annealed to 1
(the identity), after which the two convolutions merge into one. The paper sets lambda = epoch / decay_epochs at the
start of every epoch; :class:`DeepTrainingHook` does that, or the same per iteration, optionally along a cosine.
"""
from __future__ import annotations

import math

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import BaseAveragedModel, is_model_wrapper
from mmengine.runner import IterBasedTrainLoop
from torch import nn

from ..models.utils import act_lambda_modules, get_act_lambda, set_act_lambda

SCHEDULES = ('linear', 'cosine')


def _check_length(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'DeepTrainingHook: {name} must be a positive integer, got {value!r}')


@HOOKS.register_module()
class DeepTrainingHook(Hook):
    """Anneals the deep-training lambda of every VanillaNet in the model from 0 to 1.

    Lambda is computed from ``runner.epoch`` or ``runner.iter`` alone, so a resumed run continues exactly where the
    interrupted one stopped. It is set on the unwrapped model and on the EMA copy of any ``EMAHook`` (both always
    hold the same lambda, so an EMA that averages buffers keeps it, and swapping the two for validation changes
    nothing): before each train epoch (``decay_epochs``) or iteration (``decay_iters``), and before validation and
    testing, where it is the value of the last trained epoch or iteration, i.e. the one the weights were trained
    with. A run that has not trained (``tools/test.py``) keeps the lambda of its checkpoint.

    Lambda is logged as ``train/act_lambda`` and ``val/act_lambda`` (``test/act_lambda``) in the message hub, so it
    appears in the text log and the JSON / TensorBoard scalars. When it reaches 1 the model stays in its
    deep-training form; convert it after training with ``switch_to_deploy()``.

    Args:
        decay_epochs (int | None): Lambda = ``epoch / decay_epochs`` (0-based epoch), set before each epoch,
            reaching 1 at epoch ``decay_epochs``. The paper's way (100 of 300 epochs). Defaults to None.
        decay_iters (int | None): Lambda = ``iter / decay_iters``, set before each iteration. Give exactly one of
            ``decay_epochs`` and ``decay_iters``. Defaults to None.
        schedule (str): ``'linear'``, or ``'cosine'``: ``(1 - cos(pi * t)) / 2`` of the linear value ``t``.
            Defaults to ``'linear'``.

    Example:
        >>> hook = DeepTrainingHook(decay_epochs=4, schedule='cosine')
        >>> [round(hook.act_lambda_at(epoch), 4) for epoch in range(6)]
        [0.0, 0.1464, 0.5, 0.8536, 1.0, 1.0]
    """

    def __init__(self, decay_epochs: int | None = None, decay_iters: int | None = None, schedule: str = 'linear'):
        if (decay_epochs is None) == (decay_iters is None):
            raise ValueError('DeepTrainingHook: give exactly one of decay_epochs (lambda per epoch, the paper\'s '
                             f'way) and decay_iters (per iteration); got decay_epochs={decay_epochs!r}, '
                             f'decay_iters={decay_iters!r}')
        self.by_epoch = decay_epochs is not None
        self.decay_length = decay_epochs if self.by_epoch else decay_iters
        _check_length('decay_epochs' if self.by_epoch else 'decay_iters', self.decay_length)
        if schedule not in SCHEDULES:
            raise ValueError(f'DeepTrainingHook: schedule must be one of {SCHEDULES}, got {schedule!r}')
        self.schedule = schedule

    def act_lambda_at(self, step: int) -> float:
        """Lambda at epoch (``decay_epochs``) or iteration (``decay_iters``) ``step``, 0-based."""
        t = min(max(step, 0) / self.decay_length, 1.0)
        return t if self.schedule == 'linear' else (1.0 - math.cos(math.pi * t)) / 2.0

    def _step(self, runner) -> int:
        return runner.epoch if self.by_epoch else runner.iter

    @staticmethod
    def _models(runner) -> list[nn.Module]:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        emas = [hook.ema_model.module for hook in runner.hooks
                if isinstance(getattr(hook, 'ema_model', None), BaseAveragedModel)]
        return [model, *emas]

    def _apply(self, runner, value: float) -> None:
        for model in self._models(runner):
            set_act_lambda(model, value)

    def before_train(self, runner) -> None:
        model = self._models(runner)[0]
        if not act_lambda_modules(model):
            raise RuntimeError(f'DeepTrainingHook: {type(model).__name__} has no module with set_act_lambda '
                               '(e.g. a VanillaNet backbone); remove the hook or use such a model')
        if self.by_epoch and isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError('DeepTrainingHook: decay_epochs needs an epoch-based train loop; this run is '
                             'iteration-based (runner.epoch stays 0), so use decay_iters')
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        final = self.act_lambda_at(total - 1)
        if final < 1.0:
            unit = 'epochs' if self.by_epoch else 'iters'
            runner.logger.warning(
                f'DeepTrainingHook: lambda reaches only {final:.4g} (< 1) in the last of the {total} training '
                f'{unit}, so the model cannot be re-parameterized afterwards (switch_to_deploy needs lambda = 1); '
                f'decay_{unit} < {total} ends at 1')

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self._apply(runner, self.act_lambda_at(runner.epoch))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        value = self.act_lambda_at(self._step(runner))
        if not self.by_epoch:
            self._apply(runner, value)
        runner.message_hub.update_scalar('train/act_lambda', value)

    def _before_eval(self, runner, mode: str) -> None:
        # mmengine's LoggerHook idiom: a train loop still a dict (or None) means this runner has not trained, and
        # runner.epoch would build the train dataloader. Such a run keeps its checkpoint's lambda.
        if not (isinstance(runner._train_loop, dict) or runner._train_loop is None):
            # The loop counter has moved past the last trained epoch / iteration: evaluate with its lambda.
            self._apply(runner, self.act_lambda_at(self._step(runner) - 1))
        value = get_act_lambda(self._models(runner)[0])
        if value is not None:
            runner.message_hub.update_scalar(f'{mode}/act_lambda', value)

    def before_val_epoch(self, runner) -> None:
        self._before_eval(runner, 'val')

    def before_test_epoch(self, runner) -> None:
        self._before_eval(runner, 'test')


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stops training at the first iteration whose loss is NaN or infinite, with one line that names the epoch,
    the iteration, each loss term and the usual causes: once the weights hold NaN, every later iteration, checkpoint
    and evaluation is worthless. ``tools/train.py`` registers it unless ``--allow-nonfinite-loss``."""

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get('loss')
        if loss is None or bool(torch.isfinite(torch.as_tensor(loss)).all()):
            return
        terms = ', '.join(f'{key}={float(value):.4g}' for key, value in outputs.items()
                          if key != 'loss' and 'loss' in key)
        lrs = runner.optim_wrapper.get_lr().get('lr', [])
        lr = f'the learning rate ({max(lrs):.4g}) too high for this batch size, ' if lrs else 'the learning rate, '
        raise NonFiniteLoss(
            f'training stopped: the loss is {float(loss)} at epoch {runner.epoch + 1}, iteration {runner.iter + 1} '
            f'({terms}). Usual causes: {lr}no gradient clipping (optim_wrapper.clip_grad), fp16 overflow (--amp '
            'scales the loss), or a broken box or image in the data. Fix the cause and resume from a checkpoint '
            'before it, or pass --allow-nonfinite-loss to train on')
