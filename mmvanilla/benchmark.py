"""Speed, FLOPs and memory of VanillaNet next to ResNet-50, measured in one run on one machine.

The paper (Chen et al. 2023, Table 1 and Sec. 4) claims VanillaNet is fast because it is shallow: at batch 1 on an
A100, VanillaNet-9 runs in 2.91 ms where ResNet-50 needs 7.64 ms. This module measures what such a claim means on
the machine at hand, in one run so that ratios hold even on a noisy shared machine:

- latency at batch 1 and throughput at a larger batch, for VanillaNet classifiers in training form, deploy form, and
  deploy form after :func:`mmvanilla.deploy.optimize_for_inference`, and for torchvision's and mmdet's ResNet-50;
- FLOPs counted by ``torch.utils.flop_counter`` (one multiply-add is 2 FLOPs), and the achieved GFLOP/s as a share of
  the machine's own fp32 matrix-multiply GFLOP/s. Each model's timed runs alternate with timed matmuls, and its share
  is taken against the matmuls run beside it, so a neighbour's load slows both sides of the ratio alike;
- peak memory of one inference (on the CPU: in a fresh process, the growth of the resident set during one warmed-up
  inference, Linux ``VmHWM`` after ``clear_refs``; on a GPU: ``torch.cuda.max_memory_allocated``);
- RetinaNet with VanillaNet-13 against RetinaNet with ResNet-50 at detection size, in images/s;
- onnxruntime latency of the exported deploy form (:func:`mmvanilla.export.export_onnx`), and the training-step time
  of the deep-training form.

:func:`run_benchmark` returns a JSON-able dict; :func:`write_report` writes it as Markdown, JSON and a PNG plot.
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import os.path as osp
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .training_benchmark import (TrainingSettings, format_training_markdown, quick_training_settings,
                                 run_training_benchmark)

RETINANET_VANILLANET = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                                'retinanet_vanillanet13_coco.py')
RETINANET_RESNET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
MEMORY_METHOD_CPU = ('growth of the resident set of a fresh process during its first inference (Linux VmHWM '
                     'after clear_refs), above the model and input already loaded: activations, workspaces and '
                     'one-time buffers such as prepacked weights; a warmed-up allocator would hide reused pages')
MEMORY_METHOD_CPU_FALLBACK = ('growth of the peak resident set (ru_maxrss) of a fresh process during its first '
                              'inference, above the model and input already loaded')
MEMORY_METHOD_CUDA = 'torch.cuda.max_memory_allocated during one warmed-up inference, above the model and input'


@dataclass
class ModelSpec:
    """One model to measure, by name, so that a child process can build the same one.

    Args:
        name (str): Row label, e.g. ``'VanillaNet-13'``.
        family (str): ``'vanillanet'`` (a :class:`~mmvanilla.models.VanillaNetClassifier`), ``'tv_resnet50'``
            (torchvision's classifier), ``'mmdet_resnet50'`` (mmdet's backbone) or ``'detector'`` (an mmdet config).
        form (str): ``'training'`` or ``'deploy'`` for VanillaNet, ``'eval'`` for the others. Defaults to ``'eval'``.
        optimized (bool): Apply :func:`~mmvanilla.deploy.optimize_for_inference`. Defaults to False.
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


@dataclass
class BenchmarkSettings:
    """What :func:`run_benchmark` measures, and how.

    Args:
        archs (Sequence[str | dict]): VanillaNet variants (names or arch dicts). Defaults to 5, 9, 13.
        batch (int): Batch of the throughput runs. Defaults to 8.
        image_size (int): Classification input size. Defaults to 224.
        det_size (tuple[int, int]): Detection input ``(H, W)``. Defaults to ``(800, 1333)``.
        threads (int | None): CPU threads; None for every core this process may use. Defaults to None.
        repeats (int): Timed runs per measurement at batch 1 (medians are reported). Defaults to 10.
        batch_repeats (int): Timed runs of the throughput batch, the training step and the detectors.
            Defaults to 3.
        warmup (int): Untimed runs before timing at batch 1. Defaults to 2.
        batch_warmup (int): Untimed runs before timing the throughput batch, the training step and the detectors.
            Defaults to 1.
        device (str): ``'cpu'`` or ``'cuda'``. Defaults to ``'cpu'``.
        references (bool): Measure ResNet-50 (torchvision's classifier, mmdet's backbone). Defaults to True.
        training_form (bool): Measure the training form next to the deploy form. Defaults to True.
        optimized (bool): Measure the deploy form after ``optimize_for_inference`` too. Defaults to True.
        compiled (bool): Measure the deploy form under ``torch.compile`` too. Defaults to False.
        detector (bool): Measure the detectors. Defaults to True.
        detector_configs (Sequence[tuple[str, str]]): ``(name, config)`` of the detectors; a VanillaNet one is
            measured in deploy form. Defaults to RetinaNet VanillaNet-13 and ResNet-50.
        onnx (bool): Measure onnxruntime latency (CPU only). Defaults to True.
        memory (bool): Measure peak memory. Defaults to True.
        train_step (bool): Time a training step (forward, backward, SGD) of the first arch. Defaults to True.
        train_batch (int): Batch of the training step. Defaults to 8.
        matmul_size (int): Side of the square fp32 matmul reference. Defaults to 2048.
        inference (bool): Measure inference (the classification and detector rows). Defaults to True.
        training (bool | None): Measure GPU training cost (:mod:`mmvanilla.training_benchmark`); None for on a GPU
            only. Defaults to None.
        training_settings (TrainingSettings | None): What that measures; None for its defaults on this device.
            Defaults to None.
    """

    archs: Sequence[str | dict] = ('5', '9', '13')
    batch: int = 8
    image_size: int = 224
    det_size: tuple[int, int] = (800, 1333)
    threads: int | None = None
    repeats: int = 10
    batch_repeats: int = 3
    warmup: int = 2
    batch_warmup: int = 1
    device: str = 'cpu'
    references: bool = True
    training_form: bool = True
    optimized: bool = True
    compiled: bool = False
    detector: bool = True
    detector_configs: Sequence[tuple[str, str]] = field(default_factory=lambda: [
        ('RetinaNet VanillaNet-13', RETINANET_VANILLANET), ('RetinaNet ResNet-50', RETINANET_RESNET)])
    onnx: bool = True
    memory: bool = True
    train_step: bool = True
    train_batch: int = 8
    matmul_size: int = 2048
    inference: bool = True
    training: bool | None = None
    training_settings: TrainingSettings | None = None


def check_device(device: str) -> torch.device:
    """The device to benchmark on; refuses a GPU that is not there with a message saying so."""
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda asked for, but PyTorch sees no CUDA GPU here (torch.cuda.is_available() '
                           f'is False; torch {torch.__version__}, built with CUDA {torch.version.cuda}). Run on a '
                           'machine with an NVIDIA GPU and a CUDA build of PyTorch, or use --device cpu.')
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'unsupported device {device}: use cpu or cuda')
    return device


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def _arch_name(arch: str | dict) -> str:
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


def _disable_init_cfg(cfg) -> None:
    """Random weights only: a benchmark must not try to load (or download) pretrained ones."""
    cfg.model.backbone.pop('init_cfg', None)


def build_benchmark_model(spec: ModelSpec, device: torch.device | str = 'cpu') -> nn.Module:
    """Builds the model ``spec`` names, with random weights, in eval mode on ``device``.

    Raises:
        ValueError: an unknown family or form.
    """
    from .deploy import build_model
    from .models.classifier import VanillaNetClassifier
    if spec.family == 'vanillanet':
        if spec.form not in ('training', 'deploy'):
            raise ValueError(f'a VanillaNet form is training or deploy, got {spec.form!r}')
        model = VanillaNetClassifier(spec.arch, deploy=spec.form == 'deploy')
    elif spec.family == 'tv_resnet50':
        import torchvision
        model = torchvision.models.resnet50()
    elif spec.family == 'mmdet_resnet50':
        from mmdet.models.backbones import ResNet
        model = ResNet(depth=50)
    elif spec.family == 'detector':
        cfg = load_detector_config(spec.config)
        _disable_init_cfg(cfg)
        model = build_model(cfg, deploy=spec.form == 'deploy')
    else:
        raise ValueError(f'unknown model family {spec.family!r}')
    model.to(device)
    model.eval()  # not chained: mmdet's ResNet.train() returns None
    return finish_model(spec, model)


def finish_model(spec: ModelSpec, model: nn.Module) -> nn.Module:
    """Applies the inference optimizations ``spec`` asks for to a built model."""
    from .deploy import optimize_for_inference
    if spec.optimized:
        optimize_for_inference(model)
    return compile_model(model) if spec.compiled else model


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile`` with inductor and weight freezing (weights become constants it may prepack)."""
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True
    return torch.compile(model)


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


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter`` counts them (a multiply-add is 2 FLOPs).

    Convolutions and matrix products are counted; element-wise ops, pools and norms are not.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device | str = 'cpu') -> dict[str, list[float]]:
    """Times each function ``repeats`` times, in rounds that run every function once, after ``warmup`` rounds.

    Alternating the functions spreads a neighbour's load over all of them alike, so their ratios hold.

    Returns:
        dict[str, list[float]]: Seconds of each timed call, by name.
    """
    sync = _synchronizer(torch.device(device))
    times = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def matmul_fn(size: int, device: torch.device | str = 'cpu') -> tuple[Callable[[], object], int]:
    """One fp32 ``size x size`` matmul, and its FLOPs (``2 * size**3``)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    out = torch.empty(size, size, device=device)
    return (lambda: torch.mm(a, b, out=out)), 2 * size ** 3


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _read_status_kb(field_name: str) -> int | None:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field_name + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current resident size (Linux >= 4.0)
        return True
    except OSError:
        return False


def _cpu_peak_memory_child(spec: ModelSpec, batch: int, size: Sequence[int], threads: int) -> dict:
    """Runs in a fresh process: peak resident growth (MB) during its first inference."""
    import mmvanilla  # noqa: F401  (registers the models in a spawned process)
    torch.set_num_threads(threads)
    with torch.inference_mode():
        model = build_benchmark_model(spec)
        run = inference_fn(spec, model, make_inputs(spec, batch, size))
        gc.collect()
        rss_kb = _read_status_kb('VmRSS')
        if rss_kb is not None and _reset_peak_rss():
            run()
            peak_kb, method = _read_status_kb('VmHWM'), MEMORY_METHOD_CPU
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            run()
            rss_kb, peak_kb = before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = MEMORY_METHOD_CPU_FALLBACK
    return dict(peak_mb=max(peak_kb - rss_kb, 0) / 1024, loaded_mb=rss_kb / 1024, method=method)


def peak_memory(spec: ModelSpec, batch: int, size: Sequence[int], device: torch.device | str = 'cpu',
                threads: int = 1) -> dict:
    """Peak memory of one inference of ``spec`` above the loaded model and input.

    On the CPU it runs in a fresh process (a spawned child), so that nothing measured before leaves its pages behind;
    on a GPU it reads ``torch.cuda.max_memory_allocated`` in this process.

    Returns:
        dict: ``peak_mb``, ``loaded_mb`` (the model and input) and ``method`` (what was measured).
    """
    device = torch.device(device)
    if device.type == 'cpu':
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(1) as pool:
            return pool.apply(_cpu_peak_memory_child, (spec, batch, tuple(size), threads))
    with torch.inference_mode():
        model = build_benchmark_model(spec, device)
        run = inference_fn(spec, model, make_inputs(spec, batch, size, device))
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    del model, run
    torch.cuda.empty_cache()
    return dict(peak_mb=(peak - base) / 2**20, loaded_mb=base / 2**20, method=MEMORY_METHOD_CUDA)


def onnx_latency(model: nn.Module, image_size: int, repeats: int, warmup: int, threads: int,
                 matmul: Callable[[], object]) -> dict:
    """Exports ``model`` (deploy form) with :func:`mmvanilla.export.export_onnx` and times onnxruntime at batch 1.

    Returns:
        dict: ``onnx_ms`` (median latency), ``onnx_matmul_s`` (the matmuls timed beside it), ``onnx_rel_diff``
        (onnxruntime vs PyTorch) and ``onnx_export_s``.
    """
    from .export import export_onnx, onnxruntime_session
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        start = time.perf_counter()
        report = export_onnx(model, path, input_shape=(1, 3, image_size, image_size))
        export_s = time.perf_counter() - start
        # No spinning: idle onnxruntime threads would otherwise slow the matmuls timed between its runs (by a
        # quarter, measured here) and so inflate its share.
        session = onnxruntime_session(path, threads=threads, spinning=False)
        name = session.get_inputs()[0].name
        x = torch.randn(1, 3, image_size, image_size).numpy()
        times = time_interleaved(dict(onnx=lambda: session.run(None, {name: x}), matmul=matmul), repeats, warmup)
        del session
    return dict(onnx_ms=_median(times['onnx']) * 1e3, onnx_matmul_s=times['matmul'],
                onnx_rel_diff=report['max_rel_diff'], onnx_export_s=export_s)


def train_step_fn(model: nn.Module, batch: int, image_size: int, device: torch.device | str = 'cpu'):
    """A closure running one SGD step (forward, cross-entropy, backward, update) of a classifier."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    target = torch.randint(0, 1000, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
    return step


class _Run:
    """The state of one benchmark run: settings, device, threads, the matmul reference, the rows so far."""

    def __init__(self, settings: BenchmarkSettings):
        self.s = settings
        self.device = check_device(settings.device)
        self.threads = settings.threads or available_cores()
        self.logger = MMLogger.get_current_instance()
        self.matmul, self.matmul_flops = matmul_fn(settings.matmul_size, self.device)
        self.matmul_times: list[float] = []

    def gflops_of(self, matmul_times: Sequence[float]) -> float:
        self.matmul_times.extend(matmul_times)
        return self.matmul_flops / _median(matmul_times) / 1e9

    def timed(self, fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
        """Median seconds of ``fn`` and the matmul GFLOP/s measured in the same rounds."""
        times = time_interleaved(dict(model=fn, matmul=self.matmul), repeats, warmup, self.device)
        return _median(times['model']), self.gflops_of(times['matmul'])

    def measure_model(self, spec: ModelSpec, onnx: bool = False) -> dict:
        s = self.s
        size = (s.image_size, s.image_size)
        # FLOPs are counted on the plain model: the counter does not see oneDNN's prepacked kernels.
        model = build_benchmark_model(replace(spec, optimized=False, compiled=False), self.device)
        row = dict(model=spec.name, form=spec.label, spec=asdict(spec))
        with torch.inference_mode():
            inputs = make_inputs(spec, 1, size, self.device)
            row['gflop'] = count_flops(inference_fn(spec, model, inputs)) / 1e9
            start = time.perf_counter()
            model = finish_model(spec, model)
            if spec.compiled:
                model(inputs)  # the compilation, reported on its own
                row['compile_s'] = time.perf_counter() - start
            run1 = inference_fn(spec, model, inputs)
            latency, matmul_gflops = self.timed(run1, s.repeats, s.warmup)
            row.update(latency_ms=latency * 1e3, matmul_gflops=matmul_gflops)
            if s.batch > 1:
                runb = inference_fn(spec, model, make_inputs(spec, s.batch, size, self.device))
                seconds, _ = self.timed(runb, s.batch_repeats, s.batch_warmup)
                row['throughput'] = s.batch / seconds
        if onnx:
            row.update(onnx_latency(model, s.image_size, s.repeats, s.warmup, self.threads, self.matmul))
            row['onnx_matmul_gflops'] = self.gflops_of(row.pop('onnx_matmul_s'))
        del model
        gc.collect()
        if s.memory:
            row['memory'] = peak_memory(spec, 1, size, self.device, self.threads)
        self.logger.info(f'{spec.name} ({spec.label}): {row["latency_ms"]:.1f} ms at batch 1')
        return _with_rates(row)

    def measure_detector(self, spec: ModelSpec) -> dict:
        model = build_benchmark_model(replace(spec, optimized=False, compiled=False), self.device)
        with torch.inference_mode():
            inputs = make_inputs(spec, 1, self.s.det_size, self.device)
            gflop = count_flops(inference_fn(spec, model, inputs)) / 1e9
            model = finish_model(spec, model)
            run = inference_fn(spec, model, inputs)
            latency, matmul_gflops = self.timed(run, self.s.batch_repeats, self.s.batch_warmup)
        del model
        gc.collect()
        row = dict(model=spec.name, form=spec.label, spec=asdict(spec), gflop=gflop, latency_ms=latency * 1e3,
                   images_per_s=1 / latency, matmul_gflops=matmul_gflops)
        if self.s.memory:
            row['memory'] = peak_memory(spec, 1, self.s.det_size, self.device, self.threads)
        self.logger.info(f'{spec.name} ({spec.label}): {row["latency_ms"]:.0f} ms per image')
        return _with_rates(row)

    def measure_train_step(self, spec: ModelSpec) -> dict:
        model = build_benchmark_model(spec, self.device)
        step = train_step_fn(model, self.s.train_batch, self.s.image_size, self.device)
        seconds, matmul_gflops = self.timed(step, self.s.batch_repeats, self.s.batch_warmup)
        del model, step
        gc.collect()
        return dict(model=spec.name, form=spec.label, batch=self.s.train_batch, step_ms=seconds * 1e3,
                    images_per_s=self.s.train_batch / seconds, matmul_gflops=matmul_gflops)


def _with_rates(row: dict) -> dict:
    if row.get('gflop'):
        row['gflops_per_s'] = row['gflop'] / (row['latency_ms'] / 1e3)
        row['matmul_share'] = row['gflops_per_s'] / row['matmul_gflops']
        if 'onnx_ms' in row:
            row['onnx_matmul_share'] = row['gflop'] / (row['onnx_ms'] / 1e3) / row['onnx_matmul_gflops']
    return row


def model_specs(settings: BenchmarkSettings) -> list[tuple[ModelSpec, bool]]:
    """The classification rows to measure, each with whether its onnxruntime latency is measured too."""
    onnx = settings.onnx and torch.device(settings.device).type == 'cpu'
    rows = []
    for arch in settings.archs:
        name = _arch_name(arch)
        if settings.training_form:
            rows.append((ModelSpec(name, 'vanillanet', 'training', arch=arch), False))
        rows.append((ModelSpec(name, 'vanillanet', 'deploy', arch=arch), onnx))
        if settings.optimized:
            rows.append((ModelSpec(name, 'vanillanet', 'deploy', optimized=True, arch=arch), False))
        if settings.compiled:
            rows.append((ModelSpec(name, 'vanillanet', 'deploy', compiled=True, arch=arch), False))
    if settings.references:
        rows.append((ModelSpec('ResNet-50 (torchvision)', 'tv_resnet50'), onnx))
        if settings.optimized:
            rows.append((ModelSpec('ResNet-50 (torchvision)', 'tv_resnet50', optimized=True), False))
        rows.append((ModelSpec('ResNet-50 (mmdet backbone)', 'mmdet_resnet50'), False))
    return rows


def detector_specs(settings: BenchmarkSettings) -> list[ModelSpec]:
    """The detector rows: each config as it is, and after ``optimize_for_inference`` (VanillaNet in deploy form)."""
    specs = []
    for name, config in settings.detector_configs:
        vanilla = load_detector_config(config).model.backbone.type == 'VanillaNet'
        form = 'deploy' if vanilla else 'eval'
        specs.append(ModelSpec(name, 'detector', form, config=config))
        if settings.optimized:
            specs.append(ModelSpec(name, 'detector', form, optimized=True, config=config))
    return specs


def environment(run: _Run) -> dict:
    """Machine and library facts printed with the results."""
    import mmdet
    env = dict(cpu=cpu_name(), cores=available_cores(), threads=run.threads, device=str(run.device),
               torch=torch.__version__, mmdet=mmdet.__version__, python=platform.python_version(),
               dtype='float32')
    if run.device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(run.device), cuda=torch.version.cuda,
                   tf32=False)  # run_benchmark turns TF32 off: these are fp32 numbers
    try:
        import onnxruntime
        env['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        pass
    return env


def run_benchmark(settings: BenchmarkSettings | None = None) -> dict:
    """Measures everything ``settings`` asks for, in one process, and returns the results.

    Args:
        settings (BenchmarkSettings | None): What to measure. Defaults to ``BenchmarkSettings()``.

    Returns:
        dict: ``environment``, ``settings``, ``matmul`` (size, GFLOP/s, samples), ``models`` (one row per
        classification model and form), ``detectors``, ``train_steps`` and ``memory_method``.

    Raises:
        RuntimeError: ``--device cuda`` without a GPU.
    """
    settings = settings or BenchmarkSettings()
    run = _Run(settings)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(run.threads)
    if run.device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    try:
        # a bad config fails before the long part
        det_specs = detector_specs(settings) if settings.detector and settings.inference else []
        models = [run.measure_model(spec, onnx) for spec, onnx in model_specs(settings)] if settings.inference else []
        detectors = [run.measure_detector(spec) for spec in det_specs]
        steps = []
        if settings.train_step and settings.archs:
            arch = settings.archs[0]
            for form in ('training', 'deploy'):
                steps.append(run.measure_train_step(ModelSpec(_arch_name(arch), 'vanillanet', form, arch=arch)))
        training = settings.training if settings.training is not None else run.device.type == 'cuda'
        if training:
            training = run_training_benchmark(settings.training_settings or TrainingSettings(device=settings.device))
    finally:
        torch.set_num_threads(previous_threads)
    memory_methods = {row['memory']['method'] for row in models + detectors if 'memory' in row}
    # No matmul reference when nothing ran beside it (training cost only).
    matmul = dict(size=settings.matmul_size, gflops=run.matmul_flops / _median(run.matmul_times) / 1e9,
                  samples=len(run.matmul_times)) if run.matmul_times else None
    return dict(environment=environment(run), settings=asdict(settings), matmul=matmul,
                models=models, detectors=detectors, train_steps=steps, memory_method=sorted(memory_methods),
                training=training or None, wall_s=time.perf_counter() - start)


def deploy_speedups(result: dict) -> list[dict]:
    """For each VanillaNet: batch-1 latency of the training form over the deploy form, plain and optimized."""
    out = []
    by_model = {}
    for row in result['models']:
        by_model.setdefault(row['model'], {})[row['form']] = row['latency_ms']
    for name, forms in by_model.items():
        if 'training' in forms and 'deploy' in forms:
            entry = dict(model=name, training_over_deploy=forms['training'] / forms['deploy'])
            optimized = forms.get('deploy + optimize_for_inference')
            if optimized:
                entry['training_over_optimized'] = forms['training'] / optimized
            out.append(entry)
    return out


def _fmt(value, spec: str = '.1f') -> str:
    return '-' if value is None else format(value, spec)


def format_markdown(result: dict) -> str:
    """The results as Markdown: the machine, then one table per kind of measurement."""
    env, s = result['environment'], result['settings']
    size, batch = s['image_size'], s['batch']
    device = env.get('gpu', f'{env["cpu"]} ({env["cores"]} cores)')
    if result['matmul'] is None:  # training cost only
        return '\n'.join(['# VanillaNet speed benchmark', '',
                          format_training_markdown(result['training']) if result.get('training') else '',
                          f'Whole run: {result["wall_s"]:.0f} s.', ''])
    lines = [
        '# VanillaNet speed benchmark', '',
        f'Machine: {device}; device {env["device"]}, {env["threads"]} threads, {env["dtype"]}; torch '
        f'{env["torch"]}, mmdet {env["mmdet"]}' + (f', onnxruntime {env["onnxruntime"]}' if 'onnxruntime' in env
                                                 else '') + '.',
        f'Reference: fp32 {result["matmul"]["size"]}x{result["matmul"]["size"]} matmul, '
        f'**{result["matmul"]["gflops"]:.0f} GFLOP/s** (median of {result["matmul"]["samples"]} runs interleaved with '
        'the models\'). Each row\'s share of it is taken against the matmuls timed beside that row.',
        f'Latency: median of {s["repeats"]} runs after {s["warmup"]} warm-up runs; throughput, detectors and training '
        f'steps: median of {s["batch_repeats"]} after {s["batch_warmup"]}. FLOPs counted with torch.utils.flop_counter (multiply-add = 2 FLOPs).', '',
        f'## Classification at {size}x{size}', '',
        f'| Model | Form | GFLOP | Batch 1 (ms) | GFLOP/s | Share of matmul | Batch {batch} (img/s) | '
        'onnxruntime batch 1 (ms, share) | Peak memory batch 1 (MB) |',
        '|---|---|--:|--:|--:|--:|--:|--:|--:|']
    for row in result['models']:
        share = row.get('matmul_share')
        memory = row.get('memory', {}).get('peak_mb')
        onnx = _fmt(row.get('onnx_ms')) + (f' ({100 * row["onnx_matmul_share"]:.0f}%)'
                                            if 'onnx_matmul_share' in row else '')
        lines.append(f'| {row["model"]} | {row["form"]} | {_fmt(row.get("gflop"), ".3g")} | '
                     f'{row["latency_ms"]:.1f} | {_fmt(row.get("gflops_per_s"), ".0f")} | '
                     f'{_fmt(share and 100 * share, ".0f")}{"%" if share else ""} | '
                     f'{_fmt(row.get("throughput"), ".2f")} | {onnx} | {_fmt(memory, ".0f")} |')
    speedups = deploy_speedups(result)
    if speedups:
        lines += ['', 'Training form over deploy form, batch-1 latency: ' + '; '.join(
            f'{e["model"]} {e["training_over_deploy"]:.2f}x' + (
                f' ({e["training_over_optimized"]:.2f}x against the optimized deploy form)'
                if 'training_over_optimized' in e else '') for e in speedups) + '.']
    compiled = [row for row in result['models'] if 'compile_s' in row]
    if compiled:
        lines += ['', 'torch.compile time (first call): ' + '; '.join(
            f'{row["model"]} {row["compile_s"]:.0f} s' for row in compiled) + '.']
    if result['detectors']:
        h, w = s['det_size']
        lines += ['', f'## Detection at {h}x{w} (batch 1, with box decoding and NMS)', '',
                  '| Detector | Form | GFLOP | Latency (ms) | Images/s | Share of matmul | Peak memory (MB) |',
                  '|---|---|--:|--:|--:|--:|--:|']
        for row in result['detectors']:
            memory = row.get('memory', {}).get('peak_mb')
            lines.append(f'| {row["model"]} | {row["form"]} | {row["gflop"]:.0f} | {row["latency_ms"]:.0f} | '
                         f'{row["images_per_s"]:.2f} | {100 * row["matmul_share"]:.0f}% | {_fmt(memory, ".0f")} |')
    if result['train_steps']:
        lines += ['', f'## Training step at {size}x{size} (forward, backward, SGD update)', '',
                  '| Model | Form | Batch | Step (ms) | Images/s |', '|---|---|--:|--:|--:|']
        for row in result['train_steps']:
            lines.append(f'| {row["model"]} | {row["form"]} | {row["batch"]} | {row["step_ms"]:.0f} | '
                         f'{row["images_per_s"]:.2f} |')
    if result['memory_method']:
        lines += ['', 'Peak memory: ' + '; '.join(result['memory_method']) + '.']
    if result.get('training'):
        lines += ['', format_training_markdown(result['training'])]
    lines += ['', f'Whole run: {result["wall_s"]:.0f} s.', '']
    return '\n'.join(lines)


def plot(result: dict, path: str) -> None:
    """Bar charts of batch-1 latency and of the share of the matmul reference, one bar per model and form."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['models']
    labels = [f'{row["model"]}\n{row["form"]}' for row in rows]
    colors = ['tab:gray' if r['form'].startswith('training') else 'tab:green' if 'optimize' in r['form'] or
              'compile' in r['form'] else 'tab:blue' for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.8), sharey=True)
    ypos = range(len(rows))
    axes[0].barh(ypos, [r['latency_ms'] for r in rows], color=colors)
    axes[0].set_xlabel('batch-1 latency (ms, lower is better)')
    axes[0].set_yticks(list(ypos), labels, fontsize=7)
    axes[0].invert_yaxis()
    axes[1].barh(ypos, [100 * (r.get('matmul_share') or 0) for r in rows], color=colors)
    axes[1].axvline(100, color='black', linewidth=0.8)
    axes[1].set_xlabel('achieved GFLOP/s, % of fp32 matmul')
    env = result['environment']
    fig.suptitle(f'{env.get("gpu", env["cpu"])}, {env["threads"]} threads, '
                 f'{result["settings"]["image_size"]}px, fp32', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict, out_dir: str) -> dict[str, str]:
    """Writes ``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` to ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: osp.join(out_dir, f'benchmark.{ext}') for ext in ('md', 'json', 'png')}
    with open(paths['md'], 'w') as f:
        f.write(format_markdown(result))
    with open(paths['json'], 'w') as f:
        json.dump(result, f, indent=1)
    if result['models']:
        plot(result, paths['png'])
    else:
        del paths['png']  # nothing to plot: no inference rows
    return paths


def quick_settings(**overrides) -> BenchmarkSettings:
    """A seconds-long run on a tiny VanillaNet at 64x64 (for a smoke test; its figures mean nothing)."""
    tiny = dict(stem_channels=16, widths=[32, 64], strides=[2, 2])
    settings = dict(archs=[tiny], batch=2, image_size=64, det_size=(64, 96), repeats=2, batch_repeats=1, warmup=1,
                    references=False, detector=False, onnx=False, memory=False, train_batch=2, matmul_size=256,
                    training=True, training_settings=quick_training_settings(
                        device=overrides.get('device', 'cpu'), parts=('depthwise', 'backbone')))
    settings.update(overrides)
    return BenchmarkSettings(**settings)


__all__ = ['BenchmarkSettings', 'ModelSpec', 'build_benchmark_model', 'check_device', 'count_flops',
           'format_markdown', 'matmul_fn', 'peak_memory', 'plot', 'quick_settings', 'run_benchmark',
           'time_interleaved', 'write_report']
