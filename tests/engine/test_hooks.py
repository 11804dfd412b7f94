"""Spec of DeepTrainingHook: the lambda schedule, the models it reaches, evaluation, logging and resuming."""
import json
import math
import uuid
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import HOOKS
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import IterBasedTrainLoop, Runner
from torch import nn
from torch.utils.data import Dataset

from mmvanilla.engine import DeepTrainingHook
from mmvanilla.models import DeepTrainingConv, VanillaNet
from mmvanilla.models.utils import act_lambda_modules, get_act_lambda, set_act_lambda

SQRT2 = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------------------------------
# A tiny classifier, data set and metric; a fake runner for hook-level tests
# ---------------------------------------------------------------------------------------------------------------------


def tiny_vanillanet() -> VanillaNet:
    return VanillaNet(arch=dict(stem_channels=8, widths=[16], strides=[2]), act_num=1, out_indices=(1,))


class ToyClassifier(BaseModel):
    """A VanillaNet backbone and a linear head: enough for a Runner to train, validate and checkpoint."""

    def __init__(self):
        super().__init__()
        self.backbone = tiny_vanillanet()
        self.head = nn.Linear(16, 2)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        if mode == 'predict':
            return list((logits.argmax(1) == labels).float())
        return logits


class ToyDataset(Dataset):
    def __init__(self, size: int = 16):
        gen = torch.Generator().manual_seed(0)
        self.inputs = torch.rand(size, 3, 16, 16, generator=gen)
        self.labels = torch.randint(0, 2, (size,), generator=gen)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return dict(inputs=self.inputs[index], labels=self.labels[index])


class ToyAccuracy(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(float(correct) for correct in data_samples)

    def compute_metrics(self, results):
        return dict(accuracy=sum(results) / len(results))


@MODEL_WRAPPERS.register_module(name='MMVanillaTestWrapper', force=True)
class ToyWrapper(nn.Module):
    """Stands in for DDP, which needs a process group: a registered model wrapper with ``.module``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


class LambdaProbe(Hook):
    """Records the lambda the model (and each EMA copy) actually runs with, after every other hook has run."""

    priority = 'LOWEST'

    def __init__(self):
        self.train, self.val, self.val_ema = [], [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.train.append(get_act_lambda(runner.model))

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        if batch_idx == 0:
            self.val.append(get_act_lambda(runner.model))
            self.val_ema.extend(get_act_lambda(h.ema_model.module) for h in runner.hooks if isinstance(h, EMAHook))


def fake_runner(model, epoch=0, iter=0, hooks=(), trained=True, **kwargs):
    """What the hook reads from a Runner. ``trained=False`` is a test-only run (the train loop is still a dict)."""
    return SimpleNamespace(model=model, epoch=epoch, iter=iter, hooks=list(hooks),
                           message_hub=MessageHub(f'fake-{uuid.uuid4().hex}'),
                           _train_loop=object() if trained else dict(), logger=mock.Mock(), **kwargs)


def make_runner(work_dir, custom_hooks, max_epochs=2, val=False, **kwargs) -> Runner:
    """A CPU runner, 4 iterations per epoch, seeded so that two runs with the same settings train identically."""
    torch.manual_seed(0)
    loader = dict(batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='default_collate'))
    val_kwargs = dict(val_dataloader=dict(loader, dataset=ToyDataset(8)), val_cfg=dict(),
                      val_evaluator=Evaluator(ToyAccuracy())) if val else {}
    return Runner(
        model=ToyClassifier(), work_dir=str(work_dir), experiment_name=uuid.uuid4().hex,
        train_dataloader=dict(loader, dataset=ToyDataset(16)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=custom_hooks, randomness=dict(seed=0), **val_kwargs, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------

def test_is_built_from_a_config_in_mmdet_hooks():
    hook = HOOKS.build(dict(type='DeepTrainingHook', decay_epochs=100))
    assert isinstance(hook, DeepTrainingHook)
    assert hook.by_epoch and hook.decay_length == 100 and hook.schedule == 'linear'


@pytest.mark.parametrize('kwargs, message', [
    (dict(), 'exactly one of decay_epochs'),
    (dict(decay_epochs=10, decay_iters=1000), 'exactly one of decay_epochs'),
    (dict(decay_epochs=0), 'decay_epochs must be a positive integer'),
    (dict(decay_iters=-5), 'decay_iters must be a positive integer'),
    (dict(decay_epochs=2.5), 'decay_epochs must be a positive integer'),
    (dict(decay_epochs=True), 'decay_epochs must be a positive integer'),
    (dict(decay_epochs=10, schedule='step'), "schedule must be one of"),
])
def test_bad_config_is_a_value_error_when_the_config_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HOOKS.build(dict(type='DeepTrainingHook', **kwargs))


# ---------------------------------------------------------------------------------------------------------------------
# The schedule
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('schedule, expected', [
    ('linear', [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
    ('cosine', [0.0, (2 - SQRT2) / 4, 0.5, (2 + SQRT2) / 4, 1.0, 1.0, 1.0]),
])
def test_epoch_schedule_sets_lambda_at_the_start_of_each_epoch(schedule, expected):
    hook = DeepTrainingHook(decay_epochs=4, schedule=schedule)
    model = ToyClassifier()
    seen = []
    for epoch in range(7):
        runner = fake_runner(model, epoch=epoch, iter=10 * epoch)
        hook.before_train_epoch(runner)
        hook.before_train_iter(runner, batch_idx=0)  # does not move lambda within an epoch
        seen.append(get_act_lambda(model))
    assert seen == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [hook.act_lambda_at(epoch) for epoch in range(7)] == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize('schedule, expected', [
    ('linear', [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]),
    ('cosine', [(1 - math.cos(math.pi * i / 5)) / 2 for i in range(5)] + [1.0, 1.0]),
])
def test_iteration_schedule_sets_lambda_before_every_iteration(schedule, expected):
    hook = DeepTrainingHook(decay_iters=5, schedule=schedule)
    model = ToyClassifier()
    seen = []
    for it in range(7):
        runner = fake_runner(model, epoch=it // 3, iter=it)
        hook.before_train_epoch(runner)  # does not move lambda in iteration mode
        hook.before_train_iter(runner, batch_idx=it % 3)
        seen.append(get_act_lambda(model))
    assert seen == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [hook.act_lambda_at(it) for it in range(7)] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_schedule_is_clamped_to_zero_and_one():
    hook = DeepTrainingHook(decay_iters=10, schedule='cosine')
    assert hook.act_lambda_at(-1) == 0.0
    assert hook.act_lambda_at(10) == 1.0 and hook.act_lambda_at(10 ** 6) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Which modules get lambda
# ---------------------------------------------------------------------------------------------------------------------

def test_helpers_reach_the_outermost_deep_training_modules_only():
    class TeacherStudent(nn.Module):
        def __init__(self):
            super().__init__()
            self.teacher, self.student = ToyClassifier(), ToyClassifier()
            self.extra = nn.Sequential(nn.Conv2d(3, 3, 1), DeepTrainingConv(3, 3, hidden_channels=3))

    model = TeacherStudent()
    found = act_lambda_modules(model)
    assert found == [model.teacher.backbone, model.student.backbone, model.extra[1]]

    with mock.patch.object(DeepTrainingConv, 'set_act_lambda', autospec=True,
                           side_effect=DeepTrainingConv.set_act_lambda) as layer_set:
        assert set_act_lambda(model, 0.5) == 3
    # Each layer once: the backbones set their own layers, the walk does not set them again.
    layers = [m for m in model.modules() if isinstance(m, DeepTrainingConv)]
    assert layer_set.call_count == len(layers)
    assert all(layer.get_act_lambda() == 0.5 for layer in layers)
    assert get_act_lambda(model) == 0.5

    model.extra[1].set_act_lambda(0.25)
    assert get_act_lambda(model) == 0.25  # the smallest


def test_helpers_on_a_model_without_deep_training_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    assert act_lambda_modules(model) == []
    assert set_act_lambda(model, 0.5) == 0
    assert get_act_lambda(model) is None


def test_unwraps_a_model_wrapper():
    model = ToyClassifier()
    wrapped = ToyWrapper(model)
    assert is_model_wrapper(wrapped)
    hook = DeepTrainingHook(decay_iters=4)
    hook.before_train_iter(fake_runner(wrapped, iter=1), batch_idx=1)
    assert model.backbone.get_act_lambda() == 0.25


@pytest.mark.parametrize('update_buffers', [False, True])
def test_ema_copy_gets_the_same_lambda_so_averaging_keeps_it(update_buffers):
    model = ToyClassifier()
    ema_hook = EMAHook(momentum=0.5, update_buffers=update_buffers)
    runner = fake_runner(ToyWrapper(model), iter=2, hooks=[ema_hook])
    ema_hook.before_run(runner)  # copies the model at lambda 0
    ema_model = ema_hook.ema_model.module
    hook = DeepTrainingHook(decay_iters=4)

    hook.before_train_iter(runner, batch_idx=2)
    assert get_act_lambda(model) == get_act_lambda(ema_model) == 0.5
    for _ in range(3):  # the first update copies, the next ones average (buffers too if update_buffers)
        ema_hook.after_train_iter(runner, batch_idx=2)
        assert get_act_lambda(ema_model) == 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Validation and testing
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, progress, expected', [
    (dict(decay_epochs=4), dict(epoch=2, iter=80), 0.25),  # validating after epochs 0 and 1: epoch 1's lambda
    (dict(decay_iters=100), dict(epoch=2, iter=80), 0.79),  # after iterations 0..79: iteration 79's lambda
])
def test_evaluation_during_training_uses_the_last_trained_lambda(kwargs, progress, expected):
    model = ToyClassifier()
    model.backbone.set_act_lambda(0.9)  # e.g. an EMA swap put another value in
    runner = fake_runner(model, **progress)
    hook = DeepTrainingHook(**kwargs)

    hook.before_val_epoch(runner)
    assert model.backbone.get_act_lambda() == pytest.approx(expected)
    assert runner.message_hub.get_scalar('val/act_lambda').current() == pytest.approx(expected)

    model.backbone.set_act_lambda(0.9)
    hook.before_test_epoch(runner)
    assert model.backbone.get_act_lambda() == pytest.approx(expected)
    assert runner.message_hub.get_scalar('test/act_lambda').current() == pytest.approx(expected)


def test_a_test_only_run_keeps_the_checkpoint_lambda():
    model = ToyClassifier()
    model.backbone.set_act_lambda(1.0)  # as loaded from a finished checkpoint; runner.epoch would say 0
    runner = fake_runner(model, trained=False)
    DeepTrainingHook(decay_epochs=100).before_test_epoch(runner)
    assert model.backbone.get_act_lambda() == 1.0
    assert runner.message_hub.get_scalar('test/act_lambda').current() == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Checks before training
# ---------------------------------------------------------------------------------------------------------------------

def test_a_model_without_deep_training_layers_is_an_error():
    runner = fake_runner(nn.Linear(2, 2), max_epochs=3, train_loop=None)
    with pytest.raises(RuntimeError, match='no module with set_act_lambda'):
        DeepTrainingHook(decay_epochs=1).before_train(runner)


def test_decay_epochs_with_an_iteration_based_loop_is_an_error():
    runner = fake_runner(ToyClassifier(), max_iters=100, max_epochs=1, train_loop=mock.Mock(spec=IterBasedTrainLoop))
    with pytest.raises(ValueError, match='use decay_iters'):
        DeepTrainingHook(decay_epochs=1).before_train(runner)


@pytest.mark.parametrize('kwargs, warns', [
    (dict(decay_epochs=2), False),  # epoch 2, the last, trains at lambda 1
    (dict(decay_epochs=3), True),  # the last epoch trains at lambda 2/3
    (dict(decay_iters=29), False),
    (dict(decay_iters=30), True),
])
def test_warns_when_training_ends_before_lambda_reaches_one(kwargs, warns):
    runner = fake_runner(ToyClassifier(), max_epochs=3, max_iters=30, train_loop=None)
    DeepTrainingHook(**kwargs).before_train(runner)
    assert runner.logger.warning.called == warns
    if warns:
        assert 'cannot be re-parameterized' in runner.logger.warning.call_args.args[0]


# ---------------------------------------------------------------------------------------------------------------------
# With a real Runner
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('update_buffers', [False, True])
def test_runner_with_ema_validates_and_saves_both_models_with_the_schedule_lambda(tmp_path, update_buffers):
    probe = LambdaProbe()
    runner = make_runner(tmp_path, max_epochs=3, val=True, custom_hooks=[
        EMAHook(update_buffers=update_buffers), DeepTrainingHook(decay_epochs=2), probe])
    runner.train()

    assert probe.train == [0.0] * 4 + [0.5] * 4 + [1.0] * 4
    assert probe.val == probe.val_ema == [0.0, 0.5, 1.0]
    # The checkpoint's state_dict holds the EMA weights (for deployment), ema_state_dict the trained ones: both
    # at lambda 1, so either can be re-parameterized.
    checkpoint = torch.load(tmp_path / 'epoch_3.pth', map_location='cpu')
    for key in ('state_dict', 'ema_state_dict'):
        lambdas = [v.item() for k, v in checkpoint[key].items() if k.endswith('act_lambda')]
        assert lambdas and all(v == 1.0 for v in lambdas), key
    # Lambda reached 1 but nothing was re-parameterized: that is for after training.
    assert not any(layer.deployed for layer in runner.model.modules() if isinstance(layer, DeepTrainingConv))


def test_runner_logs_lambda_to_message_hub_text_log_and_json(tmp_path):
    runner = make_runner(tmp_path, val=True, default_scope='mmdet',
                         custom_hooks=[dict(type='DeepTrainingHook', decay_iters=6)])
    runner.train()

    history, _ = runner.message_hub.get_scalar('train/act_lambda').data
    assert history.tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1])
    assert runner.message_hub.get_scalar('val/act_lambda').current() == 1.0

    records = [json.loads(line) for line in (tmp_path / runner.timestamp / 'vis_data' / 'scalars.json').open()]
    train = [r['act_lambda'] for r in records if 'loss' in r]
    val = [r['act_lambda'] for r in records if 'accuracy' in r]
    assert train == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1], abs=1e-4)
    assert val == pytest.approx([0.5, 1.0], abs=1e-4)  # after iterations 3 and 7
    text_log = (tmp_path / runner.timestamp / f'{runner.timestamp}.log').read_text()
    assert 'act_lambda: 0.5000' in text_log


@pytest.mark.parametrize('decay, lambdas', [
    (dict(decay_epochs=2), [0.0] * 4 + [0.5] * 4),
    (dict(decay_iters=5), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]),
])
def test_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path, decay, lambdas):
    def hooks():
        return [EMAHook(update_buffers=True), DeepTrainingHook(**decay), LambdaProbe()]

    whole = make_runner(tmp_path / 'whole', max_epochs=2, custom_hooks=hooks())
    whole.train()
    first = make_runner(tmp_path / 'parts', max_epochs=1, custom_hooks=hooks())
    first.train()
    resumed = make_runner(tmp_path / 'parts', max_epochs=2, custom_hooks=hooks(),
                          load_from=str(tmp_path / 'parts' / 'epoch_1.pth'), resume=True)
    resumed.train()

    def probe(runner):
        return next(h for h in runner.hooks if isinstance(h, LambdaProbe))

    assert probe(whole).train == pytest.approx(lambdas)
    assert probe(first).train + probe(resumed).train == probe(whole).train
    for name, model in (('model', lambda r: r.model),
                        ('ema', lambda r: next(h for h in r.hooks if isinstance(h, EMAHook)).ema_model.module)):
        expected, actual = model(whole).state_dict(), model(resumed).state_dict()
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.allclose(actual[key].float(), expected[key].float(), rtol=1e-6, atol=1e-7), (name, key)
