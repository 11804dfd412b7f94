"""Speed, FLOPs and memory of VanillaNet next to ResNet-50, measured in one run on one machine.

The paper (Chen et al. 2023, Table 1 and Sec. 4) claims VanillaNet is fast because it is shallow: at batch 1 on an
A100, VanillaNet-9 runs in 2.91 ms where ResNet-50 needs 7.64 ms. This package measures what such a claim means on
the machine at hand, in one run so that ratios hold even on a noisy shared machine:

- latency at batch 1 and throughput at a larger batch, for VanillaNet classifiers in training form, deploy form, and
  deploy form after :func:`mmvanilla.ops.optimize_for_inference`, and for torchvision's and mmdet's ResNet-50;
- FLOPs counted by ``torch.utils.flop_counter`` (one multiply-add is 2 FLOPs), and the achieved GFLOP/s as a share of
  the machine's own fp32 matrix-multiply GFLOP/s. Each model's timed runs alternate with timed matmuls, and its share
  is taken against the matmuls run beside it, so a neighbour's load slows both sides of the ratio alike;
- peak memory of one inference (on the CPU: in a fresh process, the growth of the resident set during one warmed-up
  inference, Linux ``VmHWM`` after ``clear_refs``; on a GPU: ``torch.cuda.max_memory_allocated``);
- RetinaNet with VanillaNet-13 against RetinaNet with ResNet-50 at detection size, in images/s;
- onnxruntime latency of the exported deploy form (:func:`mmvanilla.export.export_onnx`; a detector end to end,
  :func:`mmvanilla.export.export_detector`, beside its PyTorch ``predict``), and the training-step time
  of the deep-training form with what it keeps for backward (:func:`~.memory.kept_for_backward_mb`);
- on a GPU, the training cost (:mod:`.training`): the Triton depthwise kernel against PyTorch, and training steps.

:func:`run_benchmark` (:mod:`.inference`) returns a JSON-able dict; :func:`write_report` (:mod:`.report`) writes it
as Markdown, JSON and a PNG plot. The measurements never import the report.
"""
from .environment import check_device, run_settings
from .inference import BenchmarkSettings, count_flops, matmul_fn, quick_settings, run_benchmark, time_interleaved
from .memory import kept_for_backward_mb, peak_memory
from .models import ModelSpec, build_benchmark_model, compile_model
from .report import format_markdown, format_training_markdown, plot, write_report
from .training import TrainingSettings, quick_training_settings, run_training_benchmark

__all__ = ['BenchmarkSettings', 'ModelSpec', 'TrainingSettings', 'build_benchmark_model', 'check_device',
           'compile_model', 'count_flops', 'format_markdown', 'format_training_markdown', 'kept_for_backward_mb',
           'matmul_fn', 'peak_memory', 'plot', 'quick_settings', 'quick_training_settings', 'run_benchmark', 'run_settings',
           'run_training_benchmark', 'time_interleaved', 'write_report']
