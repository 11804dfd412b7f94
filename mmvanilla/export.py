"""ONNX export of deploy-form VanillaNet models, checked against PyTorch with onnxruntime.

What exports (through torch's ``torch.export``-based exporter, opset >= 18, with a dynamic batch axis):

- a classifier (:class:`~mmvanilla.models.VanillaNetClassifier`, or the ``network`` of a classification model): the
  logits;
- a backbone (``model.backbone``, or a classifier network's backbone): its tuple of multi-scale features;
- a detector end to end (:func:`export_detector`): RetinaNet-like single-stage and Faster/Mask R-CNN-like two-stage
  mmdet detectors with their post-processing (anchors, box decoding, NMS, RoIAlign, masks) in the graph, as
  :mod:`mmvanilla.export_detectors` builds them; batch, height and width dynamic;
- a single-stage detector up to its raw head outputs (``model._forward(inputs)`` in mmdet's tensor mode, e.g.
  RetinaNet's per-level ``cls_score`` and ``bbox_pred`` maps), for post-processing of one's own.

In every case the graph's input is the tensor after the model's ``data_preprocessor`` (mean/std normalization,
BGR to RGB, padding): the preprocessing is not in the graph.

The deep-training form (Chen et al. 2023, Sec. 3.2) is never exported: a model at lambda = 1 is re-parameterized (a
copy of it) first, and one at lambda < 1 is refused, as its layers cannot be merged.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import os
import os.path as osp
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import Tensor, nn

from .apis import load_model
from .deploy import switch_to_deploy
from .extras import require
from .models.classifier import VanillaNetClassifier
from .models.utils import check_lambda_one, get_act_lambda
from .outputs import atomic_output, check_output

#: Lowest opset the ``torch.export``-based exporter writes; below it torch silently keeps 18.
MIN_OPSET = 18
PARTS = ('auto', 'classifier', 'backbone', 'detector', 'head')
RAW_OUTPUTS_NOTE = ('raw head outputs only: anchors, box decoding, score threshold and NMS are not in the graph '
                    '(run bbox_head.predict_by_feat on them, or export with --part detector)')
END2END_NOTE = ('detections padded to max_per_img per image, best first: the first num_detections rows of boxes, '
                'scores and labels (the rest are zeros, label -1). Boxes are (x1, y1, x2, y2) in the pixels of '
                'input: divide them by the resize\'s scale factor for the original image.')


def _flatten(outputs) -> list[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for item in outputs for t in _flatten(item)]
    raise TypeError(f'cannot export an output of type {type(outputs).__name__}: only tensors and (nested) '
                    'tuples or lists of tensors')


class _FlatOutputs(nn.Module):
    """The wrapped module with its (nested) tuple of outputs flattened, one ONNX output per tensor."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(_flatten(self.module(x)))


class RawDetector(nn.Module):
    """A single-stage mmdet detector up to its raw head outputs (``_forward`` in tensor mode), for export.

    No anchors, box decoding or NMS: see :data:`RAW_OUTPUTS_NOTE`.

    Args:
        detector (nn.Module): An mmdet ``SingleStageDetector`` (RetinaNet, FCOS, ...).
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(_flatten(self.detector._forward(x)))

    def output_names(self, x: Tensor) -> list[str]:
        """``cls_score_{level}``, ``bbox_pred_{level}`` for a two-output head, ``output{i}_{level}`` otherwise."""
        with torch.no_grad():
            groups = self.detector._forward(x)
        kinds = ['cls_score', 'bbox_pred'] if len(groups) == 2 else [f'output{i}' for i in range(len(groups))]
        return [f'{kind}_{level}' for kind, group in zip(kinds, groups) for level in range(len(_flatten(group)))]


def _adaptive_max_1d(x: Tensor, dim: int, size: int | None) -> Tensor:
    """Adaptive max-pooling along one axis as a max of index_selects: bin i is [floor(i*n/m), ceil((i+1)*n/m))."""
    n = x.shape[dim]
    if size is None or size == n:
        return x
    starts = [i * n // size for i in range(size)]
    ends = [-(-(i + 1) * n // size) for i in range(size)]
    out = None
    for k in range(max(e - s for s, e in zip(starts, ends))):
        # Past its end, a bin repeats its last element, which leaves its max unchanged.
        index = torch.tensor([min(s + k, e - 1) for s, e in zip(starts, ends)], device=x.device)
        taken = x.index_select(dim, index)
        out = taken if out is None else torch.maximum(out, taken)
    return out


class ExportableAdaptiveMaxPool2d(nn.Module):
    """``nn.AdaptiveMaxPool2d`` in ops ONNX has, for a fixed input size (ONNX has no adaptive max-pool).

    Exact: rectangular bins make the 2-D max the max over rows of the max over columns. The paper's
    ``13_x1_5_ada_pool`` variant pools 75 -> 38 -> 19 at 224 pixels, bins of uneven sizes that no MaxPool matches.

    Args:
        output_size (int | tuple): As ``nn.AdaptiveMaxPool2d``'s (None in a tuple keeps that size).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        return _adaptive_max_1d(_adaptive_max_1d(x, -2, self.output_size[0]), -1, self.output_size[1])


def _replace_adaptive_max_pools(model: nn.Module) -> None:
    for name, child in model.named_children():
        if isinstance(child, nn.AdaptiveMaxPool2d) and not child.return_indices:
            setattr(model, name, ExportableAdaptiveMaxPool2d(child.output_size))
        else:
            _replace_adaptive_max_pools(child)


def check_exportable(model: nn.Module) -> float | None:
    """Refuses a model still in mid deep-training, whose layers cannot be merged into the deploy form.

    Args:
        model (nn.Module): Any model.

    Returns:
        float | None: The model's lambda (1 for a deploy-form model), None if it has no VanillaNet layers.

    Raises:
        RuntimeError: lambda < 1.
    """
    lam = get_act_lambda(model)
    check_lambda_one(lam, 'export a training-form model (only the deploy form is exported)')
    return lam


def deploy_copy(model: nn.Module) -> tuple[nn.Module, bool]:
    """A CPU copy of ``model`` in eval mode and deploy form; ``model`` itself is left untouched.

    Returns:
        tuple[nn.Module, bool]: The copy, and whether it had to be re-parameterized.

    Raises:
        RuntimeError: lambda < 1 (see :func:`check_exportable`).
    """
    lam = check_exportable(model)
    model = copy.deepcopy(model).cpu().eval()
    in_training_form = any(getattr(m, 'deployed', True) is False for m in model.modules())
    if lam is not None and in_training_form:
        switch_to_deploy(model)
    return model, lam is not None and in_training_form


def onnxruntime_session(path: str, threads: int | None = None, spinning: bool = True):
    """An onnxruntime CPU session for an exported file.

    Args:
        path (str): The ``.onnx`` file.
        threads (int | None): Intra-op threads; None for onnxruntime's default (one per core). Defaults to None.
        spinning (bool): Let idle intra-op threads spin, waiting for work (onnxruntime's default). Turn it off when
            other work shares the cores between runs: spinning threads slow it down. Defaults to True.

    Returns:
        onnxruntime.InferenceSession: The session; ``session.run(None, {session.get_inputs()[0].name: array})``.
    """
    ort = require('onnxruntime', 'running an ONNX file')
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def _relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref - out).max() / max(float(np.abs(ref).max()), 1e-12))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def exporter_available() -> bool:
    """Whether this torch has the ``torch.export``-based ONNX exporter the export uses (torch >= 2.6)."""
    return ('dynamo' in inspect.signature(torch.onnx.export).parameters
            and hasattr(getattr(torch.export, 'Dim', None), 'DYNAMIC'))


def _require_exporter(check: bool) -> None:
    if not exporter_available():
        raise RuntimeError(f'ONNX export needs torch 2.6 or later (its torch.export-based exporter); this is torch '
                           f'{torch.__version__}: export with a newer torch (the checkpoint loads there as it is)')
    require('onnxscript', 'ONNX export')
    require('onnx', 'ONNX export')
    if check:
        require('onnxruntime', 'checking an ONNX export')


def _check_opset(opset: int | None) -> None:
    if opset is not None and opset < MIN_OPSET:
        raise ValueError(f'opset {opset} is not supported: torch\'s exporter writes opset {MIN_OPSET} or later; '
                         f'ask for {MIN_OPSET} or later, or leave the opset to torch')


def _torch_onnx_export(module: nn.Module, args: tuple, input_names: Sequence[str], output_names: Sequence[str],
                       opset: int | None, name: str, dynamic_shapes=None, custom_translation_table=None):
    """``torch.onnx.export`` with the ``torch.export``-based exporter, quietly; its failure as one short line."""
    # torch.export logs a failed guard as a page of traceback before raising (the error below says it in a line);
    # onnx_ir warns of attributes whose type it infers.
    loggers = [logging.getLogger(logger_name) for logger_name in ('torch._guards', 'onnx_ir')]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')  # torch.export's notes about mmdet's Python asserts, at every export
            return torch.onnx.export(
                module, args, None, input_names=list(input_names), output_names=list(output_names),
                opset_version=opset, dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False,
                custom_translation_table=custom_translation_table)
    except torch.onnx.OnnxExporterError as e:
        # torch's message is a page of next steps; its last part names the failing op or line.
        summary = str(e).split('## Exception summary')[-1].strip().splitlines()[0]
        raise RuntimeError(f'torch could not export {name} to ONNX: {summary} (set MMVANILLA_DEBUG=1 for torch\'s '
                           'full report); nothing was written') from e
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ValueError(f'input_shape must be (N, C, H, W) with positive sizes, got {input_shape}')
    return input_shape


def _save(program, tmp: str) -> tuple[bool, int]:
    """Writes the exported program; returns whether its weights went to ``tmp + '.data'`` and its opset."""
    program.save(tmp)  # weights inside the file unless they pass protobuf's 2 GB limit
    return osp.isfile(tmp + '.data'), program.model.opset_imports.get('')  # the onnx_ir model: no weight copy


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int] = (1, 3, 224, 224),
                opset: int | None = None, check: bool = True, rtol: float = 1e-4,
                output_names: Sequence[str] | None = None, dynamic_batch: bool = True, seed: int = 0) -> dict:
    """Exports a deploy-form model (or one at lambda = 1, re-parameterized on a copy) to ONNX and checks it.

    The check runs the file with onnxruntime on the CPU and PyTorch on the same random input (uniform in [-1, 1])
    and compares every output by ``max|onnx - torch| / max|torch|``.

    Args:
        model (nn.Module): The model; its ``forward(x)`` returns a tensor or a (nested) tuple/list of tensors, each
            becoming one ONNX output. Models without VanillaNet layers are exported as they are.
        path (str | os.PathLike): The ``.onnx`` file to write (weights over 2 GB go to ``path + '.data'``).
        input_shape (Sequence[int]): ``(N, C, H, W)`` of the example input. Defaults to ``(1, 3, 224, 224)``.
        opset (int | None): ONNX opset, at least 18; None for torch's default. Defaults to None.
        check (bool): Compare onnxruntime with PyTorch. Defaults to True.
        rtol (float): Largest relative error the check accepts. Defaults to 1e-4.
        output_names (Sequence[str] | None): One name per output tensor; None for ``output`` (one output) or
            ``output0, output1, ...``. Defaults to None.
        dynamic_batch (bool): Make the batch axis dynamic. Defaults to True.
        seed (int): Seed of the random input. Defaults to 0.

    Returns:
        dict: ``path``, ``files`` (the files written), ``input`` (name and shape), ``outputs`` (list of dicts with
        ``name`` and ``shape``), ``opset``, ``act_lambda`` (None: no VanillaNet layers), ``reparameterized``,
        ``dynamic_batch``, ``max_abs_diff`` and ``max_rel_diff`` (None without ``check``).

    Raises:
        RuntimeError: lambda < 1, or the check fails (nothing is written: ``path`` keeps what it held); a torch
            without the exporter, or onnx, onnxscript or onnxruntime missing (``pip install 'mmvanilla[deploy]'``).
        ValueError: a bad ``input_shape``, ``opset`` or ``output_names``.

    Example:
        >>> from mmvanilla.models import VanillaNetClassifier
        >>> net = VanillaNetClassifier(dict(stem_channels=8, widths=[16], strides=[2]), num_classes=10)
        >>> net.set_act_lambda(1.0)
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + '/net.onnx'
        >>> report = export_onnx(net, path, input_shape=(1, 3, 64, 64), output_names=['logits'])
        >>> report['outputs'], report['max_rel_diff'] < 1e-4
        ([{'name': 'logits', 'shape': [1, 10]}], True)
    """
    input_shape = _input_shape(input_shape)
    _check_opset(opset)
    _require_exporter(check)
    path = os.fspath(path)
    lam = get_act_lambda(model)
    net, reparameterized = deploy_copy(model)
    _replace_adaptive_max_pools(net)

    x = torch.rand(input_shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    wrapped = _FlatOutputs(net).eval()
    try:
        with torch.no_grad():
            reference = [t.numpy() for t in wrapped(x)]
    except RuntimeError as e:  # e.g. a pooling window larger than what is left of a small input
        raise ValueError(f'{type(model).__name__} cannot run on a {input_shape[2]}x{input_shape[3]} input '
                         f'({str(e).splitlines()[0][:200]}): give a larger --shape; nothing was written') from None
    if output_names is None:
        output_names = ['output'] if len(reference) == 1 else [f'output{i}' for i in range(len(reference))]
    output_names = list(output_names)
    if len(output_names) != len(reference) or len(set(output_names)) != len(output_names):
        raise ValueError(f'{len(output_names)} output names {output_names} for {len(reference)} outputs: give one '
                         'distinct name per output tensor')

    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    logger = MMLogger.get_current_instance()
    # Written and checked under a temporary name, then renamed: a failed export or check leaves what was there.
    with atomic_output(path) as tmp:
        program = _torch_onnx_export(wrapped, (x,), ['input'], output_names, opset, type(model).__name__,
                                     dynamic_shapes=({0: torch.export.Dim.DYNAMIC},) if dynamic_batch else None)
        external, written_opset = _save(program, tmp)
        report = dict(path=path, files=[path, path + '.data'] if external else [path],
                      input=dict(name='input', shape=list(input_shape)),
                      outputs=[dict(name=n, shape=list(r.shape)) for n, r in zip(output_names, reference)],
                      opset=written_opset, act_lambda=lam, reparameterized=reparameterized,
                      dynamic_batch=dynamic_batch, max_abs_diff=None, max_rel_diff=None)
        if check:
            session = onnxruntime_session(tmp, threads=torch.get_num_threads())
            outputs = session.run(output_names, {'input': x.numpy()})
            del session
            abs_diff = max(float(np.abs(r - o).max()) for r, o in zip(reference, outputs))
            rel_diffs = {n: _relative_error(r, o) for n, r, o in zip(output_names, reference, outputs)}
            worst = max(rel_diffs, key=rel_diffs.get)
            report.update(max_abs_diff=abs_diff, max_rel_diff=rel_diffs[worst])
            if not rel_diffs[worst] <= rtol:  # also catches NaN
                raise RuntimeError(f'onnxruntime disagrees with PyTorch on output {worst!r}: max relative error '
                                   f'{rel_diffs[worst]:.3e} > {rtol:g}; {path} was not written. Try another opset '
                                   '(--opset), or report the model and torch/onnxruntime versions.')
    if not external:
        _remove(path + '.data')  # a stale one from an earlier, larger export would be mistaken for this one's
    if check:
        logger.info(f'exported {path}: onnxruntime vs PyTorch max abs diff {report["max_abs_diff"]:.3e}, '
                    f'max rel diff {report["max_rel_diff"]:.3e}')
    else:
        logger.info(f'exported {path} (not checked against PyTorch)')
    return report


def export_detector(model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int] = (1, 3, 224, 224),
                    opset: int | None = None, check: bool = True, rtol: float = 1e-3, size_divisor: int = 32,
                    dynamic_size: bool = True, seed: int = 0) -> dict:
    """Exports an mmdet detector end to end (network, decoding, NMS, RoIAlign, masks) to ONNX and checks it.

    The graph is :func:`~mmvanilla.export_detectors.end2end_detector`'s module in deploy form (a detector at
    lambda = 1 is re-parameterized on a copy): inputs ``input`` and ``image_shape``, outputs ``boxes``, ``scores``,
    ``labels``, ``num_detections`` (and ``masks``), padded to ``max_per_img`` (see
    :mod:`mmvanilla.export_detectors`). Batch, height and width are dynamic (height and width multiples of
    ``size_divisor``; the graph is traced on an example of its own size, large enough that no feature map is a
    single pixel). The check runs the file with onnxruntime and the module in PyTorch on the same random inputs
    (uniform in [-1, 1]: that example and one of ``input_shape``) and compares the detections box by box
    (:func:`~mmvanilla.export_detectors.compare_detections`).

    Args:
        model (nn.Module): The detector.
        path (str | os.PathLike): The ``.onnx`` file to write.
        input_shape (Sequence[int]): ``(N, C, H, W)`` of the check's input (the traced one's without
            ``dynamic_size``, with N at least 2). Defaults to ``(1, 3, 224, 224)``.
        opset (int | None): ONNX opset, at least 18; None for torch's default. Defaults to None.
        check (bool): Compare onnxruntime with PyTorch. Defaults to True.
        rtol (float): The comparison's tolerance. Defaults to 1e-3.
        size_divisor (int): Height and width are multiples of it (the config's ``pad_size_divisor``). Defaults to 32.
        dynamic_size (bool): Make height and width dynamic (else only the batch is). Defaults to True.
        seed (int): Seed of the random input. Defaults to 0.

    Returns:
        dict: ``path``, ``files``, ``inputs`` and ``outputs`` (names and shapes, ``'N'``, ``'H'``, ``'W'`` where
        dynamic), ``opset``,
        ``act_lambda``, ``reparameterized``, ``dynamic`` (the dynamic axes), ``max_per_img`` and, checked,
        ``comparison`` (:func:`~mmvanilla.export_detectors.compare_detections`'s result).

    Raises:
        RuntimeError: lambda < 1, torch cannot export it, or onnxruntime disagrees (nothing is written then).
        ValueError: a detector whose post-processing does not export, a bad ``input_shape`` or ``opset``.
    """
    from .export_detectors import (OUTPUT_NAMES, coarsest_stride, compare_detections, detections_of, end2end_detector,
                                   onnx_translations)
    input_shape = _input_shape(input_shape)
    if input_shape[2] % size_divisor or input_shape[3] % size_divisor:
        raise ValueError(f'--shape {input_shape[2]} {input_shape[3]}: a detector\'s input is padded to a multiple of '
                         f'{size_divisor} (its pad_size_divisor); give multiples of {size_divisor}, e.g. --shape '
                         f'{-(-input_shape[2] // size_divisor) * size_divisor} '
                         f'{-(-input_shape[3] // size_divisor) * size_divisor}')
    _check_opset(opset)
    path = os.fspath(path)
    lam = get_act_lambda(model)
    net, reparameterized = deploy_copy(model)
    wrapped = end2end_detector(net).eval()
    gen = torch.Generator().manual_seed(seed)

    def example(shape):
        return torch.rand(shape, generator=gen) * 2 - 1, torch.tensor([shape[2:]] * shape[0])

    # torch.export specializes sizes of 1 and may equate sizes that happen to be equal in its example, so the graph
    # is traced on 2 images of unequal sides over 3 of the coarsest level's strides; the check adds input_shape.
    n, channels, height, width = input_shape
    if dynamic_size:
        side = -(-3 * coarsest_stride(net) // size_divisor) * size_divisor
        traced = (2, channels, side, side + size_divisor)
    else:
        traced = (max(2, n), channels, height, width)
    examples = [example(traced)] + ([example(input_shape)] if input_shape != traced else [])
    with torch.no_grad():
        references = [wrapped(*args) for args in examples]
    output_names = list(OUTPUT_NAMES[:len(references[0])])
    dynamic = {0: torch.export.Dim('batch')}
    if dynamic_size:
        dynamic.update({2: size_divisor * torch.export.Dim('height'), 3: size_divisor * torch.export.Dim('width')})

    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:
        program = _torch_onnx_export(wrapped, examples[0], ['input', 'image_shape'], output_names, opset,
                                     type(model).__name__, dynamic_shapes=(dynamic, {0: dynamic[0]}),
                                     custom_translation_table=onnx_translations())
        external, written_opset = _save(program, tmp)
        symbols = ('N', channels, 'H', 'W') if dynamic_size else ('N', channels, height, width)
        report = dict(path=path, files=[path, path + '.data'] if external else [path],
                      inputs=[dict(name='input', shape=list(symbols)), dict(name='image_shape', shape=['N', 2])],
                      outputs=[dict(name=name, shape=['N', *ref.shape[1:]])
                               for name, ref in zip(output_names, references[0])],
                      opset=written_opset, act_lambda=lam, reparameterized=reparameterized,
                      dynamic=['batch', 'height', 'width'] if dynamic_size else ['batch'],
                      max_per_img=references[0][0].shape[1], comparison=None)
        if check:
            session = onnxruntime_session(tmp, threads=torch.get_num_threads())
            got, want = [], []
            for (x, image_shape), reference in zip(examples, references):
                try:
                    outputs = session.run(output_names, {'input': x.numpy(), 'image_shape': image_shape.numpy()})
                except Exception as e:  # noqa: BLE001  onnxruntime's own error types
                    raise RuntimeError(f'onnxruntime could not run the exported {type(model).__name__} on an input of '
                                       f'shape {list(x.shape)} ({str(e).splitlines()[0][:300]}); {path} was not '
                                       'written. Report the model and torch/onnxruntime versions.') from None
                got += detections_of(outputs)
                want += detections_of(reference)
            del session
            comparison = compare_detections(want, got, rtol)
            report['comparison'] = comparison
            if comparison['first_disagreement']:
                raise RuntimeError(f'onnxruntime disagrees with PyTorch on the example inputs '
                                   f'({comparison["first_disagreement"]}); {path} was not written. Try another '
                                   'opset (--opset), or report the model and torch/onnxruntime versions.')
    if not external:
        _remove(path + '.data')
    MMLogger.get_current_instance().info(
        f'exported {path}' + (f': onnxruntime and PyTorch agree on {report["comparison"]["detections"]} '
                              'detections of the example inputs' if check else ' (not checked against PyTorch)'))
    return report


def select_part(model: nn.Module, part: str = 'auto') -> tuple[nn.Module, str]:
    """The module to export for ``part`` of a built model.

    Args:
        model (nn.Module): A model built from a config: a classification model (with ``network``), a
            :class:`~mmvanilla.models.VanillaNetClassifier`, or an mmdet detector.
        part (str): ``'classifier'``, ``'backbone'``, ``'detector'`` (the detector end to end, its detections as
            outputs: :func:`export_detector`), ``'head'`` (a single-stage detector up to its raw head outputs) or
            ``'auto'`` (classifier for a classification model, detector for a detector). Defaults to ``'auto'``.

    Returns:
        tuple[nn.Module, str]: The module to export (the detector itself for ``'detector'``, to be exported with
        :func:`export_detector`; a :class:`RawDetector` for ``'head'``) and the part chosen.

    Raises:
        ValueError: the model has no such part, or the part cannot be exported (a detector whose post-processing
            does not export, the raw head outputs of a two-stage detector).
    """
    from mmdet.models.detectors import BaseDetector, SingleStageDetector

    from .export_detectors import end2end_detector
    if part not in PARTS:
        raise ValueError(f'unknown part {part!r}; choose one of {", ".join(PARTS)}')
    name = type(model).__name__
    network = getattr(model, 'network', None)
    classifier = network if isinstance(network, nn.Module) else model if isinstance(
        model, VanillaNetClassifier) else None
    if part == 'auto':
        if classifier is not None:
            part = 'classifier'
        elif isinstance(model, BaseDetector):
            part = 'detector'
        else:
            raise ValueError(f'cannot tell what to export from a {name}: choose --part classifier, backbone or '
                             'detector')
    if part == 'classifier':
        if classifier is None:
            raise ValueError(f'a {name} is not a classifier: choose --part backbone' +
                             (' or detector' if isinstance(model, BaseDetector) else ''))
        return classifier, part
    if part == 'backbone':
        backbone = getattr(model, 'backbone', None)
        if backbone is None and classifier is not None:
            backbone = getattr(classifier, 'backbone', None)
        if not isinstance(backbone, nn.Module):
            raise ValueError(f'a {name} has no backbone to export')
        return backbone, part
    if not isinstance(model, BaseDetector):
        raise ValueError(f'a {name} is not an mmdet detector: choose --part backbone or classifier')
    if part == 'detector':
        end2end_detector(model)  # refuses, before the export, a detector whose post-processing does not export
        return model, part
    if not isinstance(model, SingleStageDetector):
        raise ValueError(f'{name} is not a single-stage detector: only those have raw head outputs to export '
                         '(--part head); export it end to end with --part detector')
    return RawDetector(model), part


def min_input_size(model: nn.Module) -> int:
    """The smallest input side every VanillaNet in ``model`` takes: its total stride (stem stride times the
    blocks' pooling strides), below which a pooling window finds no pixel left. 1 for a model without VanillaNet."""
    sides = [1]
    for module in model.modules():
        arch = getattr(module, 'arch', None)
        if isinstance(arch, dict) and 'strides' in arch:
            side = arch.get('stem_stride', 4)
            for stride, pool_size in zip(arch['strides'], arch.get('pool_sizes') or [None] * len(arch['strides'])):
                side *= stride if pool_size is None else 1
            sides.append(side)
    return max(sides)


def check_input_size(model: nn.Module, input_size: Sequence[int]) -> None:
    """Refuses an input height or width the model cannot take, naming the smallest it can.

    Raises:
        ValueError: a size that is not a positive integer, or below :func:`min_input_size`.
    """
    if len(input_size) != 2 or any(int(s) != s or s < 1 for s in input_size):
        raise ValueError(f'--shape {" ".join(map(str, input_size))}: give a height and a width, positive integers '
                         '(e.g. --shape 224 224)')
    smallest = min_input_size(model)
    if min(input_size) < smallest:
        raise ValueError(f'--shape {" ".join(map(str, input_size))} is too small for this model: its VanillaNet '
                         f'downsamples by {smallest}, so height and width must be at least {smallest} (a multiple of '
                         f'{smallest}, e.g. --shape {max(smallest, 224 // smallest * smallest)} '
                         f'{max(smallest, 224 // smallest * smallest)}, wastes no pixel)')


def export_checkpoint(cfg: Config, checkpoint: str, out: str, part: str = 'auto',
                      input_size: Sequence[int] = (224, 224), batch_size: int = 1, opset: int | None = None,
                      use_ema: bool = True, rtol: float | None = None, force: bool = False) -> dict:
    """What tools/export_onnx.py does: load ``checkpoint`` into ``cfg.model``, export ``part``, check it.

    Args:
        cfg (Config): The config.
        checkpoint (str): Training-form (lambda must be 1) or deploy-form checkpoint.
        out (str): The ``.onnx`` file.
        part (str): See :func:`select_part`. Defaults to ``'auto'``.
        input_size (Sequence[int]): ``(H, W)`` of the example input. Defaults to ``(224, 224)``.
        batch_size (int): Batch of the example input (the exported batch axis is dynamic). Defaults to 1.
        opset (int | None): ONNX opset (>= 18); None for torch's default. Defaults to None.
        use_ema (bool): Export the EMA weights when the checkpoint has them. Defaults to True.
        rtol (float | None): The onnxruntime check's tolerance; None for the default of :func:`export_onnx` (1e-4)
            or, for ``'detector'``, :func:`export_detector` (1e-3). Defaults to None.
        force (bool): Replace ``out`` if it exists. Defaults to False.

    Returns:
        dict: :func:`export_onnx`'s (or :func:`export_detector`'s) report with ``part``, ``source`` (the weights
        exported), ``checkpoint_form``, ``note`` (what the graph leaves out) and ``preprocess`` (the config's
        data_preprocessor settings, which the graph's input must already have had applied).
    """
    _check_opset(opset)  # before the slow part
    check_output(out, force, inputs=[checkpoint], what='ONNX file')
    if min(input_size) < 1 or batch_size < 1:
        raise ValueError(f'--shape {" ".join(map(str, input_size))} --batch {batch_size}: sizes must be positive '
                         'integers (e.g. --shape 224 224)')
    model, source, deploy, _ = load_model(cfg, checkpoint, use_ema)
    module, part = select_part(model, part)
    check_input_size(module, input_size)
    preprocess = {k: v for k, v in (cfg.model.get('data_preprocessor') or {}).items()
                  if k in ('mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr', 'pad_size_divisor')}
    tolerance = {} if rtol is None else dict(rtol=rtol)
    if part == 'detector':
        report = export_detector(module, out, input_shape=(batch_size, 3, *input_size), opset=opset,
                                 size_divisor=preprocess.get('pad_size_divisor', 1), **tolerance)
        note = END2END_NOTE + (f' Masks: paste each into its box, then threshold at mask_thr_binary='
                               f'{module.test_cfg.rcnn.mask_thr_binary}.' if 'masks' in report['outputs'][-1]['name']
                               else '')
    else:
        x = torch.zeros(batch_size, 3, *input_size)
        names = module.output_names(x) if isinstance(module, RawDetector) else (
            ['logits'] if part == 'classifier' else None)
        if part == 'backbone' and hasattr(module, 'out_indices'):
            names = [f'stage{i}' for i in module.out_indices]
        report = export_onnx(module, out, input_shape=(batch_size, 3, *input_size), opset=opset,
                             output_names=names, **tolerance)
        note = RAW_OUTPUTS_NOTE if part == 'head' else None
    report.update(part=part, source=source, checkpoint_form='deploy' if deploy else 'training', note=note,
                  preprocess=preprocess)
    return report
