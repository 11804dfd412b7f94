"""What VanillaNet costs to train on a GPU, next to ResNet-50, measured in one run (``tools/benchmark.py --device cuda``).

VanillaNet's series activation (Chen et al. 2023, Sec. 3.3) is a depthwise convolution after every layer. PyTorch
runs it in NCHW through its own native kernels, which made a VanillaNet-13 training step cost many times ResNet-50's;
:mod:`mmvanilla.ops` replaces them with Triton kernels. This module measures, each row in the same process:

- the depthwise convolution alone (ReLU, conv, forward and backward) at every stage shape of VanillaNet-13 in the
  detection recipe (9x9) and of VanillaNet-5 in the ImageNet recipe (7x7): the Triton kernel against PyTorch in
  NCHW and in channels_last (cuDNN);
- a training step (forward, backward, update; AMP) of the VanillaNet-13 backbone against mmdet's ResNet-50, of
  RetinaNet with each, and of the ImageNet classifiers (``vanillanet_5`` against timm's ``resnet50``), with the
  kernel on and off, with and without activation checkpointing (``with_cp``), in NCHW and channels_last;
- the peak GPU memory of the timed steps (``torch.cuda.max_memory_allocated``: weights, optimizer state and
  activations).

:func:`run_training_benchmark` returns a JSON-able dict; :func:`~mmvanilla.benchmark.format_training_markdown`
renders it.
"""
from __future__ import annotations

import copy
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn

from .environment import check_device
from .memory import kept_for_backward_mb
from .models import disable_init_cfg, load_detector_config, repo_config

__all__ = ['TrainingSettings', 'depthwise_label', 'quick_training_settings', 'run_training_benchmark', 'time_step']


def _stage_shapes(batch: int, size: Sequence[int], kernel: int, stem: int, stage_channels: Sequence[int],
                  prefix: str) -> list[tuple[str, tuple[int, int, int, int], int]]:
    h, w = size
    return [(f'{prefix} stride {4 * 2 ** i}', (batch, c, h // (4 * 2 ** i), w // (4 * 2 ** i)), kernel)
            for i, c in enumerate([stem, *stage_channels])]


@dataclass
class TrainingSettings:
    """What :func:`run_training_benchmark` measures.

    Args:
        device (str): Defaults to ``'cuda'``.
        amp (bool): fp16 autocast and a gradient scaler, as ``tools/train.py --amp``. Defaults to True.
        repeats (int): Timed steps per row (the median is reported). Defaults to 10.
        warmup (int): Untimed steps before timing (Triton compiles, cuDNN picks algorithms). Defaults to 3.
        depthwise_shapes (Sequence): ``(name, (N, C, H, W), k)`` of the depthwise rows. Defaults to VanillaNet-13's
            stages at 4 x 800 x 1216 (k 9) and VanillaNet-5's at 128 x 224 x 224 (k 7).
        det_batch (int): Images per detection step. Defaults to 4.
        det_size (tuple[int, int]): Detection input ``(H, W)``. Defaults to ``(800, 1216)``.
        detector_configs (Sequence[tuple[str, str]]): ``(name, config)``; a VanillaNet one is measured with the
            kernel on and off and with ``with_cp``, and its backbone alone against the next config's. Defaults to
            RetinaNet VanillaNet-13 and RetinaNet ResNet-50.
        classifiers (Sequence[tuple[str, dict]]): ``(timm model name, kwargs)`` of the classification rows.
            Defaults to ``vanillanet_5`` (act_num 3, as the ImageNet recipe) and ``resnet50``.
        cls_batch (int): Images per classification step. Defaults to 128.
        cls_size (int): Classification input side. Defaults to 224.
        parts (Sequence[str]): Any of ``'depthwise'``, ``'backbone'``, ``'detector'``, ``'classifier'``.
            Defaults to all.
        compiled (bool): Time each backbone's step under ``torch.compile`` too (VanillaNet with the kernel, which
            the compiled graph calls as an operator); its ratios are against the compiled reference. Defaults to
            False.
    """

    device: str = 'cuda'
    amp: bool = True
    repeats: int = 10
    warmup: int = 3
    depthwise_shapes: Sequence = field(default_factory=lambda: [
        *_stage_shapes(4, (800, 1216), 9, 512, [1024, 2048, 4096], 'VanillaNet-13 det'),
        *_stage_shapes(128, (224, 224), 7, 512, [1024, 2048, 4096], 'VanillaNet-5 cls')])
    det_batch: int = 4
    det_size: tuple[int, int] = (800, 1216)
    detector_configs: Sequence[tuple[str, str]] = field(default_factory=lambda: [
        ('RetinaNet VanillaNet-13', repo_config('retinanet_vanillanet13_coco.py')),
        ('RetinaNet ResNet-50', 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')])
    classifiers: Sequence[tuple[str, dict]] = (('vanillanet_5', dict(act_num=3)), ('resnet50', {}))
    cls_batch: int = 128
    cls_size: int = 224
    parts: Sequence[str] = ('depthwise', 'backbone', 'detector', 'classifier')
    compiled: bool = False


def quick_training_settings(**overrides) -> TrainingSettings:
    """Seconds on a CPU: tiny shapes, the tiny synthetic RetinaNet, a tiny classifier (a smoke test)."""
    settings = dict(device='cpu', amp=False, repeats=1, warmup=1, depthwise_shapes=[('tiny', (2, 4, 12, 16), 3)],
                    det_batch=1, det_size=(64, 96),
                    detector_configs=[('RetinaNet tiny', repo_config('retinanet_vanillanet_tiny_synthetic.py'))],
                    classifiers=[('vanillanet_5', dict(act_num=1))],
                    cls_batch=2, cls_size=32)
    settings.update(overrides)
    return TrainingSettings(**settings)


def time_step(step: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Median milliseconds of ``step`` after ``warmup`` calls, and the peak GPU memory of the timed calls (MB)."""
    cuda = device.type == 'cuda'
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    row = dict(ms=1e3 * statistics.median(times))
    if cuda:
        row['peak_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def depthwise_label(kernel: bool) -> str:
    """What runs the depthwise convolution: ``'Triton'`` (the kernel) or ``'PyTorch native'``."""
    return 'Triton' if kernel else 'PyTorch native'


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _measured(build: Callable[[], Callable[[], object]], device: torch.device, settings: TrainingSettings,
              **labels) -> dict:
    """Builds a step and times it, and counts what a training step keeps for backward (not with ``with_cp``, whose
    checkpoints hold block inputs outside autograd's saved tensors); a step that runs out of GPU memory is a row that
    says so."""
    try:
        step = build()
        row = {**labels, **time_step(step, device, settings.repeats, settings.warmup)}
        if isinstance(step, _TrainStep) and not labels.get('with_cp') and not labels.get('compiled'):
            row['kept_mb'] = step.kept_for_backward_mb()
    except torch.cuda.OutOfMemoryError:
        row = {**labels, 'error': 'out of GPU memory'}
    step = None
    _release()
    MMLogger.get_current_instance().info(f'training benchmark: {row}')
    return row


class _TrainStep:
    """One optimizer step of ``model`` on a fixed batch (``loss_fn`` runs the forward), as ``tools/train.py --amp``
    takes it: autocast, a gradient scaler."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                 device: torch.device, amp: bool):
        self.model, self.loss_fn, self.optimizer, self.device, self.amp = model, loss_fn, optimizer, device, amp
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def forward(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            return self.loss_fn()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(self.forward()).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def kept_for_backward_mb(self) -> float:
        """What one forward keeps for backward (:func:`~.memory.kept_for_backward_mb`), the parameters not counted
        (under AMP their fp16 copies are)."""
        return kept_for_backward_mb(self.forward, self.model.parameters())


def depthwise_rows(settings: TrainingSettings, device: torch.device) -> list[dict]:
    """ReLU + depthwise conv, forward and backward in fp16 (fp32 on a CPU): Triton against PyTorch's two paths."""
    from ..ops import depthwise_conv2d, runs_on
    dtype = torch.float16 if device.type == 'cuda' else torch.float32
    rows = []
    for name, shape, k in settings.depthwise_shapes:
        x0 = torch.randn(shape, device=device, dtype=dtype)
        w0 = torch.randn(shape[1], 1, k, k, device=device, dtype=dtype) / k
        grad = torch.randn(shape, device=device, dtype=dtype)

        def make(fn, layout=torch.contiguous_format):
            x = x0.contiguous(memory_format=layout).requires_grad_()
            w = w0.contiguous(memory_format=layout).requires_grad_()
            g = grad.contiguous(memory_format=layout)
            return lambda: fn(x, w).backward(g)

        def pytorch(x, w):
            return F.conv2d(F.relu(x), w, padding=k // 2, groups=w.shape[0])

        row = dict(name=name, shape=list(shape), kernel=k, dtype=str(dtype).replace('torch.', ''))
        for key, fn, layout in (('triton', lambda x, w: depthwise_conv2d(x, w, relu_input=True),
                                 torch.contiguous_format),
                                ('pytorch_nchw', pytorch, torch.contiguous_format),
                                ('pytorch_channels_last', pytorch, torch.channels_last)):
            if key == 'triton' and not runs_on(device):
                row[key] = dict(error=f'no Triton on {device.type}')
                continue
            row[key] = _measured(lambda: make(fn, layout), device, settings)
        rows.append(row)
        del x0, w0, grad
        _release()
    return rows


def _detector_cfg(config: str, **backbone):
    cfg = load_detector_config(config)
    disable_init_cfg(cfg)
    cfg.model.backbone.update(backbone)
    return cfg


def _variants(backbone, device: torch.device, compiled: bool = False) -> list[dict]:
    """VanillaNet with the kernel on and off (it runs on CUDA only), with_cp off and on, then with the kernel
    checkpointing every stage but the last (few activations, costly convolutions); other backbones as they are.
    ``compiled`` adds each under ``torch.compile`` (VanillaNet with the kernel, without with_cp)."""
    if backbone.type != 'VanillaNet':
        return [{}] + [dict(compiled=True)] * compiled
    from ..models.vanillanet import resolve_arch, stage_ends
    kernels = (True, False) if device.type == 'cuda' else (False,)
    all_but_last = list(range(len(stage_ends(resolve_arch(backbone.arch))) - 1))
    return ([dict(fast_dwconv=kernel, with_cp=cp) for cp in (False, True) for kernel in kernels]
            + [dict(fast_dwconv=kernels[0], with_cp=all_but_last)]
            + [dict(fast_dwconv=kernels[0], with_cp=False, compiled=True)] * compiled)


def _detector_variant_rows(settings: TrainingSettings, device: torch.device, build: Callable,
                           label: Callable[[str], str], compiled: bool = False) -> list[dict]:
    """One row per detector config and backbone variant; ``build(cfg)`` returns the step to time, whose model is
    compiled in place for a ``compiled`` variant (its first, warm-up step compiles)."""

    def build_variant(cfg, compiled):
        step = build(cfg)
        if compiled:
            step.model.compile()
        return step
    rows = []
    for name, config in settings.detector_configs:
        base = _detector_cfg(config)
        for variant in _variants(base.model.backbone, device, compiled):
            cfg = copy.deepcopy(base)
            cfg.model.backbone.update({k: v for k, v in variant.items() if k != 'compiled'})
            rows.append(_measured(lambda: build_variant(cfg, variant.get('compiled', False)), device, settings,
                                  model=label(name), **variant))
    return rows


def backbone_rows(settings: TrainingSettings, device: torch.device) -> list[dict]:
    """The detectors' backbones alone: forward, the mean of every output as the loss, backward, SGD."""
    from mmdet.registry import MODELS

    def build(cfg):
        model = MODELS.build(cfg.model.backbone).to(device)
        model.train()
        x = torch.randn(settings.det_batch, 3, *settings.det_size, device=device)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        return _TrainStep(model, lambda: sum(out.float().mean() for out in model(x)), optimizer, device,
                          settings.amp)
    return _detector_variant_rows(settings, device, build, lambda name: name.split(' ', 1)[-1] + ' backbone',
                                  settings.compiled)


def _detection_batch(batch: int, size: Sequence[int], num_classes: int, device: torch.device):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    h, w = size
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                             batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        xy = torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
        wh = (0.05 + 0.25 * torch.rand(8, 2, generator=gen)) * torch.tensor([w, h])
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1).to(device),
                                           labels=torch.randint(0, num_classes, (8,), generator=gen).to(device))
        samples.append(sample)
    return torch.randn(batch, 3, h, w, generator=gen).to(device), samples


def detector_rows(settings: TrainingSettings, device: torch.device) -> list[dict]:
    """A detector's training step on a fixed batch with 8 boxes per image: ``loss``, backward, AdamW."""
    from ..apis import build_model

    def build(cfg):
        model = build_model(cfg).to(device)
        model.train()
        x, samples = _detection_batch(settings.det_batch, settings.det_size, cfg.model.bbox_head.num_classes,
                                      device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        return _TrainStep(model, lambda: model.parse_losses(model.loss(x, samples))[0], optimizer, device,
                          settings.amp)
    return _detector_variant_rows(settings, device, build, lambda name: name)


def classifier_rows(settings: TrainingSettings, device: torch.device) -> list[dict]:
    """timm classifiers at the ImageNet recipe's batch: cross-entropy, backward, SGD; NCHW and channels_last, and
    on CUDA VanillaNet with the kernels on and off in each layout (in channels_last only the max-pool's applies)."""
    import timm
    import mmvanilla  # noqa: F401  (registers the vanillanet_* models with timm)
    rows = []
    for name, kwargs in settings.classifiers:
        vanilla = name.startswith('vanillanet')
        variants = [(torch.contiguous_format, True), (torch.channels_last, True)]
        if vanilla and device.type == 'cuda':
            variants = [(layout, kernel) for layout, _ in variants for kernel in (True, False)]
        for layout, kernel in variants:
            def build(layout=layout, kernel=kernel):
                extra = dict(fast_dwconv=kernel) if vanilla else {}
                model = timm.create_model(name, num_classes=1000, **kwargs, **extra)
                model = model.to(device, memory_format=layout).train()
                x = torch.randn(settings.cls_batch, 3, settings.cls_size, settings.cls_size,
                                device=device).contiguous(memory_format=layout)
                target = torch.randint(0, 1000, (settings.cls_batch,), device=device)
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
                return _TrainStep(model, lambda: F.cross_entropy(model(x), target), optimizer, device,
                                  settings.amp)
            labels = dict(model=name, layout='channels_last' if layout is torch.channels_last else 'NCHW')
            if vanilla:  # the depthwise kernel takes NCHW on CUDA, where channels_last goes to cuDNN; the pool both
                cuda = device.type == 'cuda'
                labels['depthwise'] = ('cuDNN' if cuda and layout is torch.channels_last
                                       else depthwise_label(kernel and cuda))
                labels['max_pool'] = 'Triton' if kernel and cuda else 'PyTorch'
            rows.append(_measured(build, device, settings, **labels))
    return rows


def run_training_benchmark(settings: TrainingSettings | None = None) -> dict:
    """Measures every part ``settings`` names; returns the rows by part, the settings and the GPU."""
    settings = settings or TrainingSettings()
    device = check_device(settings.device)
    measure = dict(depthwise=depthwise_rows, backbone=backbone_rows, detector=detector_rows,
                   classifier=classifier_rows)
    unknown = set(settings.parts) - set(measure)
    if unknown:
        raise ValueError(f'unknown training benchmark parts {sorted(unknown)}; valid: {sorted(measure)}')
    start = time.perf_counter()
    result = dict(settings=asdict(settings), device=str(device), torch=torch.__version__)
    if device.type == 'cuda':
        import triton
        result.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda, triton=triton.__version__)
    for part in settings.parts:
        result[part] = measure[part](settings, device)
    result['wall_s'] = time.perf_counter() - start
    return result
