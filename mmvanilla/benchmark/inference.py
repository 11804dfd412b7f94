"""The inference measurements of a benchmark run, and :func:`run_benchmark`, which gathers them in one process.

Per row: latency at batch 1 and throughput at a larger batch, FLOPs counted by ``torch.utils.flop_counter`` (one
multiply-add is 2 FLOPs) and the achieved GFLOP/s as a share of the machine's own fp32 matmul GFLOP/s, timed in
rounds that alternate with the matmuls so that a neighbour's load slows both sides of the ratio alike; onnxruntime
latency of the exported deploy form (a detector's exported end to end, on the input its ``predict`` is timed on);
peak memory (:mod:`.memory`). The run adds the training-step time of the
deep-training form and, on a GPU, the training cost of :mod:`.training`.
"""
from __future__ import annotations

import gc
import os.path as osp
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

from ..models.vanillanet import resolve_arch
from .environment import available_cores, check_device, environment, run_settings
from .memory import kept_for_backward_mb, peak_memory
from .models import (ModelSpec, arch_name, build_benchmark_model, finish_model, inference_fn, load_detector_config,
                     make_inputs, repo_config)
from .training import TrainingSettings, quick_training_settings, run_training_benchmark

__all__ = ['BenchmarkSettings', 'count_flops', 'matmul_fn', 'quick_settings', 'run_benchmark', 'time_interleaved']

RETINANET_VANILLANET = repo_config('retinanet_vanillanet13_coco.py')
RETINANET_RESNET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


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
        training (bool | None): Measure GPU training cost (:mod:`mmvanilla.benchmark.training`); None for on a GPU
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

    def __post_init__(self):
        for name in ('batch', 'repeats', 'batch_repeats', 'train_batch', 'image_size', 'matmul_size'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name.replace("_", "-")}={value!r}: give a positive integer')
        for name in ('warmup', 'batch_warmup'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'{name.replace("_", "-")}={value!r}: give an integer >= 0')
        if not self.archs:
            raise ValueError('archs: give at least one VanillaNet variant')
        for arch in self.archs:
            resolve_arch(arch)


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


def onnx_latency(model: nn.Module, image_size: int, repeats: int, warmup: int, threads: int,
                 matmul: Callable[[], object]) -> dict:
    """Exports ``model`` (deploy form) with :func:`mmvanilla.export.export_onnx` and times onnxruntime at batch 1.

    Returns:
        dict: ``onnx_ms`` (median latency), ``onnx_matmul_s`` (the matmuls timed beside it), ``onnx_rel_diff``
        (onnxruntime vs PyTorch) and ``onnx_export_s``.
    """
    from ..export import export_onnx, onnxruntime_session
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


def onnx_detector_latency(model: nn.Module, inputs, repeats: int, warmup: int, threads: int,
                          matmul: Callable[[], object]) -> dict:
    """Exports a detector end to end (:func:`mmvanilla.export.export_detector`) and times onnxruntime on the input
    that PyTorch's ``predict`` is timed on; compares their detection scores on it.

    Only the scores are compared: random weights give boxes of nearly equal scores (RetinaNet's ties at float32's
    resolution), which the two runtimes may rank differently. Box by box agreement is for real images and trained
    weights (``tools/test_onnx.py``).

    Returns:
        dict: ``onnx_ms`` (median latency), ``onnx_matmul_s`` (the matmuls timed beside it), ``onnx_export_s``,
        ``onnx_detections`` (onnxruntime's and PyTorch's numbers of detections) and ``onnx_score_diff`` (the largest
        difference between their scores, best first; None when the numbers differ).
    """
    import copy

    from ..export import export_detector, onnxruntime_session
    x, samples = inputs
    feed = {'input': x.cpu().numpy(),
            'image_shape': torch.tensor([s.metainfo['img_shape'][:2] for s in samples]).numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'detector.onnx')
        start = time.perf_counter()
        export_detector(model, path, input_shape=x.shape, check=False)  # its detections are compared below
        export_s = time.perf_counter() - start
        session = onnxruntime_session(path, threads=threads, spinning=False)  # see onnx_latency
        times = time_interleaved(dict(onnx=lambda: session.run(None, feed), matmul=matmul), repeats, warmup)
        _, scores, _, counts = session.run(None, feed)[:4]
        del session
    with torch.no_grad():
        expected = model.predict(x, copy.deepcopy(samples))[0].pred_instances.scores
    got = torch.from_numpy(scores[0, :int(counts[0])])
    diff = float((got - expected).abs().max()) if len(got) == len(expected) and len(got) else (
        0.0 if len(got) == len(expected) else None)
    return dict(onnx_ms=_median(times['onnx']) * 1e3, onnx_matmul_s=times['matmul'], onnx_export_s=export_s,
                onnx_detections=[len(got), len(expected)], onnx_score_diff=diff)


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
        row = dict(model=spec.name, form=spec.label, spec=asdict(spec), gflop=gflop, latency_ms=latency * 1e3,
                   images_per_s=1 / latency, matmul_gflops=matmul_gflops)
        if self.s.onnx and self.device.type == 'cpu' and not (spec.optimized or spec.compiled):
            row.update(onnx_detector_latency(model, inputs, self.s.batch_repeats, self.s.batch_warmup, self.threads,
                                             self.matmul))
            row['onnx_matmul_gflops'] = self.gflops_of(row.pop('onnx_matmul_s'))
        del model
        gc.collect()
        if self.s.memory:
            row['memory'] = peak_memory(spec, 1, self.s.det_size, self.device, self.threads)
        self.logger.info(f'{spec.name} ({spec.label}): {row["latency_ms"]:.0f} ms per image')
        return _with_rates(row)

    def measure_train_step(self, spec: ModelSpec) -> dict:
        model = build_benchmark_model(spec, self.device)
        step = train_step_fn(model, self.s.train_batch, self.s.image_size, self.device)
        seconds, matmul_gflops = self.timed(step, self.s.batch_repeats, self.s.batch_warmup)
        x = torch.randn(self.s.train_batch, 3, self.s.image_size, self.s.image_size, device=self.device)
        kept_mb = kept_for_backward_mb(lambda: model(x), model.parameters())
        del model, step, x
        gc.collect()
        return dict(model=spec.name, form=spec.label, batch=self.s.train_batch, step_ms=seconds * 1e3,
                    images_per_s=self.s.train_batch / seconds, matmul_gflops=matmul_gflops,
                    kept_for_backward_mb=kept_mb)


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
        name = arch_name(arch)
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
    start = time.perf_counter()
    with run_settings(run.device, run.threads):
        # a bad config fails before the long part
        det_specs = detector_specs(settings) if settings.detector and settings.inference else []
        models = [run.measure_model(spec, onnx) for spec, onnx in model_specs(settings)] if settings.inference else []
        detectors = [run.measure_detector(spec) for spec in det_specs]
        steps = []
        if settings.train_step and settings.archs:
            arch = settings.archs[0]
            for form in ('training', 'deploy'):
                steps.append(run.measure_train_step(ModelSpec(arch_name(arch), 'vanillanet', form, arch=arch)))
        training = settings.training if settings.training is not None else run.device.type == 'cuda'
        if training:
            training = run_training_benchmark(settings.training_settings or TrainingSettings(device=settings.device))
    memory_methods = {row['memory']['method'] for row in models + detectors if 'memory' in row}
    # No matmul reference when nothing ran beside it (training cost only).
    matmul = dict(size=settings.matmul_size, gflops=run.matmul_flops / _median(run.matmul_times) / 1e9,
                  samples=len(run.matmul_times)) if run.matmul_times else None
    return dict(environment=environment(run.device, run.threads), settings=asdict(settings), matmul=matmul,
                models=models, detectors=detectors, train_steps=steps, memory_method=sorted(memory_methods),
                training=training or None, wall_s=time.perf_counter() - start)


def quick_settings(**overrides) -> BenchmarkSettings:
    """A seconds-long run on a tiny VanillaNet at 64x64 (for a smoke test; its figures mean nothing)."""
    tiny = dict(stem_channels=16, widths=[32, 64], strides=[2, 2])
    settings = dict(archs=[tiny], batch=2, image_size=64, det_size=(64, 96), repeats=2, batch_repeats=1, warmup=1,
                    references=False, detector=False, onnx=False, memory=False, train_batch=2, matmul_size=256,
                    training=True, training_settings=quick_training_settings(
                        device=overrides.get('device', 'cpu'), parts=('depthwise', 'backbone')))
    settings.update(overrides)
    return BenchmarkSettings(**settings)

