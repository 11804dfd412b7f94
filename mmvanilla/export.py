"""ONNX export of deploy-form VanillaNet models, checked against PyTorch with onnxruntime.

What exports (through torch's ``torch.export``-based exporter, opset >= 18, with a dynamic batch axis):

- a classifier (:class:`~mmvanilla.models.VanillaNetClassifier`, or the ``network`` of a classification model): the
  logits;
- a backbone (``model.backbone``, or a classifier network's backbone): its tuple of multi-scale features;
- a single-stage detector (RetinaNet, ...): the network up to the raw head outputs, ``model._forward(inputs)`` in
  mmdet's tensor mode, e.g. RetinaNet's per-level ``cls_score`` and ``bbox_pred`` maps. Anchor generation, box
  decoding, score thresholding and NMS are **not** in the graph: run them outside (mmdet's
  ``bbox_head.predict_by_feat``) or use mmdeploy.

What does not: a two-stage detector (Mask R-CNN, Faster R-CNN). Its tensor-mode forward runs the RPN's proposal step
inside the network: mmdet 3.3's box decoder, under ONNX export, imports ``mmdet.core.export``, a module removed in
mmdet 3.x, and the step goes on to mmcv's NMS, which keeps a data-dependent number of boxes, before RoIAlign. mmdet
3.x leaves that deployment to mmdeploy. Its backbone exports.

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
PARTS = ('auto', 'classifier', 'backbone', 'detector')
RAW_OUTPUTS_NOTE = ('raw head outputs only: anchors, box decoding, score threshold and NMS are not in the graph '
                    '(run bbox_head.predict_by_feat on them, or use mmdeploy)')


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
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ValueError(f'input_shape must be (N, C, H, W) with positive sizes, got {input_shape}')
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
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter('ignore')  # torch.export's notes about mmdet's Python asserts, at every export
                program = torch.onnx.export(
                    wrapped, (x,), None, input_names=['input'], output_names=output_names, opset_version=opset,
                    dynamic_shapes=({0: torch.export.Dim.DYNAMIC},) if dynamic_batch else None, dynamo=True,
                    verbose=False)
        except torch.onnx.OnnxExporterError as e:
            # torch's message is a page of next steps; its last part names the failing op or line.
            summary = str(e).split('## Exception summary')[-1].strip().splitlines()[0]
            raise RuntimeError(f'torch could not export {type(model).__name__} to ONNX: {summary} (set '
                               'MMVANILLA_DEBUG=1 for torch\'s full report); nothing was written') from e
        program.save(tmp)  # weights inside the file unless they pass protobuf's 2 GB limit
        external = osp.isfile(tmp + '.data')
        written_opset = program.model.opset_imports.get('')  # the onnx_ir model: no copy of the weights

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


def select_part(model: nn.Module, part: str = 'auto') -> tuple[nn.Module, str]:
    """The module to export for ``part`` of a built model.

    Args:
        model (nn.Module): A model built from a config: a classification model (with ``network``), a
            :class:`~mmvanilla.models.VanillaNetClassifier`, or an mmdet detector.
        part (str): ``'classifier'``, ``'backbone'``, ``'detector'`` (a single-stage detector up to its raw head
            outputs) or ``'auto'`` (classifier for a classification model, detector for a detector). Defaults to
            ``'auto'``.

    Returns:
        tuple[nn.Module, str]: The module to export (a :class:`RawDetector` for the detector) and the part chosen.

    Raises:
        ValueError: the model has no such part, or the part cannot be exported (a two-stage detector).
    """
    from mmdet.models.detectors import BaseDetector, SingleStageDetector, TwoStageDetector
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
    if isinstance(model, TwoStageDetector):
        raise ValueError(
            f'{name} (a two-stage detector) cannot be exported whole: its tensor-mode forward runs the RPN\'s '
            'proposal step inside the network, whose ONNX path in mmdet 3.3 imports mmdet.core.export (removed in '
            'mmdet 3.x), then NMS with a data-dependent number of boxes, then RoIAlign: that needs mmdeploy. Export '
            'the backbone with --part backbone; that works.')
    if not isinstance(model, SingleStageDetector):
        raise ValueError(f'a {name} is not a single-stage mmdet detector: choose --part backbone or classifier')
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
                      use_ema: bool = True, rtol: float = 1e-4, force: bool = False) -> dict:
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
        rtol (float): Largest relative error the onnxruntime check accepts. Defaults to 1e-4.
        force (bool): Replace ``out`` if it exists. Defaults to False.

    Returns:
        dict: :func:`export_onnx`'s report with ``part``, ``source`` (the weights exported), ``checkpoint_form``,
        ``note`` (what the graph leaves out) and ``preprocess`` (the config's data_preprocessor settings, which
        the graph's input must already have had applied).
    """
    _check_opset(opset)  # before the slow part
    check_output(out, force, inputs=[checkpoint], what='ONNX file')
    if min(input_size) < 1 or batch_size < 1:
        raise ValueError(f'--shape {" ".join(map(str, input_size))} --batch {batch_size}: sizes must be positive '
                         'integers (e.g. --shape 224 224)')
    model, source, deploy, _ = load_model(cfg, checkpoint, use_ema)
    module, part = select_part(model, part)
    check_input_size(module, input_size)
    x = torch.zeros(batch_size, 3, *input_size)
    names = module.output_names(x) if isinstance(module, RawDetector) else (
        ['logits'] if part == 'classifier' else None)
    if part == 'backbone' and hasattr(module, 'out_indices'):
        names = [f'stage{i}' for i in module.out_indices]
    report = export_onnx(module, out, input_shape=(batch_size, 3, *input_size), opset=opset, rtol=rtol,
                         output_names=names)
    preprocess = {k: v for k, v in (cfg.model.get('data_preprocessor') or {}).items()
                  if k in ('mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr', 'pad_size_divisor')}
    note = RAW_OUTPUTS_NOTE if part == 'detector' else None
    report.update(part=part, source=source, checkpoint_form='deploy' if deploy else 'training', note=note,
                  preprocess=preprocess)
    return report
