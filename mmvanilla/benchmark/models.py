"""The models a benchmark measures, named by a :class:`ModelSpec` so that a child process can build the same one.

Each is built with random weights (nothing is loaded or downloaded), in eval mode, then optionally optimized with
:func:`mmvanilla.ops.optimize_for_inference` or compiled with ``torch.compile``.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ['ModelSpec', 'arch_name', 'build_benchmark_model', 'compile_model', 'disable_init_cfg', 'finish_model',
           'inference_fn', 'load_detector_config', 'make_inputs', 'repo_config']


def repo_config(name: str) -> str:
    """The path of ``configs/<name>`` in this repository, whatever the working directory."""
    return osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs', name)


@dataclass
class ModelSpec:
    """One model to measure, by name, so that a child process can build the same one.

    Args:
        name (str): Row label, e.g. ``'VanillaNet-13'``.
        family (str): ``'vanillanet'`` (a :class:`~mmvanilla.models.VanillaNetClassifier`), ``'tv_resnet50'``
            (torchvision's classifier), ``'mmdet_resnet50'`` (mmdet's backbone) or ``'detector'`` (an mmdet config).
        form (str): ``'training'`` or ``'deploy'`` for VanillaNet, ``'eval'`` for the others. Defaults to ``'eval'``.
        optimized (bool): Apply :func:`~mmvanilla.ops.optimize_for_inference`. Defaults to False.
        compiled (bool): Wrap in ``torch.compile`` (inductor, with weight freezing). Defaults to False.
        arch (str | dict | None): VanillaNet arch. Defaults to None.
        config (str | None): Detector config file (``mmdet::`` names allowed). Defaults to None.
    """

    name: str
    family: str
    form: str = 'eval'
    optimized: bool = False
    compiled: bool = False
    arch: str | dict | None = None
    config: str | None = None

    @property
    def label(self) -> str:
        """The form column: e.g. ``deploy + optimize_for_inference``."""
        extras = ['optimize_for_inference'] * self.optimized + ['torch.compile'] * self.compiled
        return ' + '.join([self.form, *extras])


def arch_name(arch: str | dict) -> str:
    return f'VanillaNet-{arch}' if isinstance(arch, (str, int)) else 'VanillaNet-custom'


def load_detector_config(config: str):
    """Reads a detector config: a file, or a package config such as ``mmdet::retinanet/...``."""
    from mmengine.config import Config
    if '::' in config:
        from mmengine.hub import get_config
        return get_config(config)
    if not osp.isfile(config):
        raise FileNotFoundError(f'detector config {config} not found')
    return Config.fromfile(config)


def disable_init_cfg(cfg) -> None:
    """Random weights only: a benchmark must not try to load (or download) pretrained ones."""
    cfg.model.backbone.pop('init_cfg', None)


def _vanillanet(spec: ModelSpec) -> nn.Module:
    from ..models.classifier import VanillaNetClassifier
    if spec.form not in ('training', 'deploy'):
        raise ValueError(f'a VanillaNet form is training or deploy, got {spec.form!r}')
    return VanillaNetClassifier(spec.arch, deploy=spec.form == 'deploy')


def _tv_resnet50(spec: ModelSpec) -> nn.Module:
    import torchvision
    return torchvision.models.resnet50()


def _mmdet_resnet50(spec: ModelSpec) -> nn.Module:
    from mmdet.models.backbones import ResNet
    return ResNet(depth=50)


def _detector(spec: ModelSpec) -> nn.Module:
    from ..apis import build_model
    cfg = load_detector_config(spec.config)
    disable_init_cfg(cfg)
    return build_model(cfg, deploy=spec.form == 'deploy')


_BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = dict(
    vanillanet=_vanillanet, tv_resnet50=_tv_resnet50, mmdet_resnet50=_mmdet_resnet50, detector=_detector)


def build_benchmark_model(spec: ModelSpec, device: torch.device | str = 'cpu') -> nn.Module:
    """Builds the model ``spec`` names, with random weights, in eval mode on ``device``.

    Raises:
        ValueError: an unknown family or form.
    """
    if spec.family not in _BUILDERS:
        raise ValueError(f'unknown model family {spec.family!r}')
    model = _BUILDERS[spec.family](spec)
    model.to(device)
    model.eval()  # not chained: mmdet's ResNet.train() returns None
    return finish_model(spec, model)


def finish_model(spec: ModelSpec, model: nn.Module) -> nn.Module:
    """Applies the inference optimizations ``spec`` asks for to a built model."""
    from ..ops import optimize_for_inference
    if spec.optimized:
        optimize_for_inference(model)
    return compile_model(model) if spec.compiled else model


class _Frozen(nn.Module):
    """A compiled module whose calls run with inductor's weight freezing on, leaving the global config alone.

    Dynamo reads the flag while it traces, at the first call and at every recompilation (a new batch size), so
    each call is covered; ``torch.compile(options={'freezing': True})`` would reach inductor only, and the weights,
    traced as inputs, would not be folded.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        import torch._inductor.config as inductor_config
        self.compiled = torch.compile(model)
        self._freezing = inductor_config.patch(freezing=True)  # one patch object: entering it costs ~6 us, not ~24

    def forward(self, *args, **kwargs):
        with self._freezing:
            return self.compiled(*args, **kwargs)


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile`` with inductor and weight freezing (weights become constants it may prepack)."""
    return _Frozen(model)


def make_inputs(spec: ModelSpec, batch: int, size: Sequence[int], device: torch.device | str = 'cpu'):
    """The input of one inference: an image batch, or for a detector the batch and its ``DetDataSample`` list."""
    h, w = size
    if spec.family != 'detector':
        return torch.randn(batch, 3, h, w, device=device)
    from mmdet.structures import DetDataSample
    pad = (-(-h // 32) * 32, -(-w // 32) * 32)  # what the data preprocessor pads to
    x = torch.randn(batch, 3, *pad, device=device)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), pad_shape=pad, batch_input_shape=pad)
    return x, [DetDataSample(metainfo=meta) for _ in range(batch)]


def inference_fn(spec: ModelSpec, model: nn.Module, inputs) -> Callable[[], object]:
    """A closure that runs one inference (a detector's ``predict``, with box decoding and NMS)."""
    if spec.family == 'detector':
        x, samples = inputs
        return lambda: model.predict(x, samples)
    return lambda: model(inputs)
