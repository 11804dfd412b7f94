"""An end-to-end ONNX detector run by onnxruntime, evaluated on a COCO split beside PyTorch, as tools/test.py does.

:class:`OnnxDetector` runs a file exported by ``tools/export_onnx.py --part detector``
(:func:`mmvanilla.export.export_detector`) and turns its padded outputs into mmdet's predictions: boxes divided by
the resize's scale factor, masks pasted into the original image and thresholded (:func:`paste_masks`, mmdet's own
CPU path). :func:`evaluate_onnx` feeds it the config's ``test_dataloader`` through the config's
``data_preprocessor`` and scores it with the config's ``test_evaluator`` (mmdet's ``CocoMetric``), so its figures
are those ``tools/test.py`` would print; with a checkpoint it runs the PyTorch deploy form on the same batches,
scores it the same way, compares the two box by box (:func:`~mmvanilla.export_detectors.compare_detections`) and
times both (the model only: no data loading, preprocessing or metric), alternating batch by batch so that a
neighbour's load slows both alike.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import Tensor

from .apis import load_model
from .export import deploy_copy, onnxruntime_session
from .export_detectors import OUTPUT_NAMES, compare_detections, detections_of
from .outputs import atomic_output, check_output
from .data_checks import check_data

__all__ = ['OnnxDetector', 'evaluate_onnx', 'format_evaluation', 'paste_masks']

#: (table header, CocoMetric key) of what :func:`format_evaluation` shows.
COLUMNS = (('box mAP', 'coco/bbox_mAP'), ('box mAP50', 'coco/bbox_mAP_50'), ('mask mAP', 'coco/segm_mAP'),
           ('mask mAP50', 'coco/segm_mAP_50'))


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Pastes each box's mask probabilities into an image and thresholds them, as mmdet's ``FCNMaskHead`` does on
    the CPU (its ``_do_paste_mask``, one box at a time, on the box's neighbourhood).

    Args:
        masks (Tensor): ``(n, h, w)`` probabilities, one map per box.
        boxes (Tensor): ``(n, 4)`` boxes ``(x1, y1, x2, y2)`` in the image's pixels.
        height (int): The image's height.
        width (int): The image's width.
        threshold (float): A pixel is in the mask when its probability is at least this. Defaults to 0.5.

    Returns:
        Tensor: ``(n, height, width)`` bool masks.

    Example:
        >>> masks = paste_masks(torch.ones(1, 28, 28), torch.tensor([[2., 3., 6., 5.]]), 8, 10)
        >>> masks.shape, int(masks.sum())
        (torch.Size([1, 8, 10]), 8)
    """
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    pasted = torch.zeros(len(masks), height, width, dtype=torch.bool)
    for i in range(len(masks)):
        chunk, where = _do_paste_mask(masks[i:i + 1, None], boxes[i:i + 1], height, width, skip_empty=True)
        pasted[(slice(i, i + 1), ) + where] = chunk >= threshold
    return pasted


class OnnxDetector:
    """An end-to-end detector exported by ``tools/export_onnx.py --part detector``, run by onnxruntime on the CPU.

    Args:
        path (str): The ``.onnx`` file.
        threads (int | None): onnxruntime's intra-op threads; None for one per core. Defaults to None.
        mask_thr_binary (float): The threshold of pasted masks (the config's ``test_cfg.rcnn.mask_thr_binary``).
            Defaults to 0.5.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an end-to-end detector.
    """

    def __init__(self, path: str, threads: int | None = None, mask_thr_binary: float = 0.5):
        if not osp.isfile(path):
            raise FileNotFoundError(f'ONNX file {path} not found: export it with tools/export_onnx.py CONFIG '
                                    'CHECKPOINT --part detector')
        try:
            self.session = onnxruntime_session(path, threads=threads, spinning=False)
        except Exception as e:  # noqa: BLE001  onnxruntime's own error types: a file it cannot read
            raise ValueError(f'{path} is not an ONNX file onnxruntime can load ({str(e).splitlines()[0][:200]}): '
                             'export it with tools/export_onnx.py') from None
        inputs = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if inputs != ['input', 'image_shape'] or tuple(self.output_names) not in (OUTPUT_NAMES[:4], OUTPUT_NAMES):
            raise ValueError(f'{path} is not an end-to-end detector (inputs {inputs}, outputs {self.output_names}); '
                             'export one with tools/export_onnx.py CONFIG CHECKPOINT --part detector')
        self.path = path
        self.with_mask = 'masks' in self.output_names
        self.mask_thr_binary = mask_thr_binary

    def run(self, inputs: Tensor, image_shapes: Tensor) -> list[dict]:
        """The graph's detections of each image, as it gives them (in the pixels of ``inputs``, masks unpasted).

        Args:
            inputs (Tensor): ``(N, 3, H, W)`` preprocessed, padded images.
            image_shapes (Tensor): ``(N, 2)`` each image's height and width before padding.

        Returns:
            list[dict]: Per image, ``boxes``, ``scores``, ``labels`` (and ``masks``) as tensors.
        """
        feed = {'input': inputs.detach().cpu().float().numpy(),
                'image_shape': np.asarray(image_shapes, dtype=np.int64).reshape(-1, 2)}
        try:
            outputs = self.session.run(self.output_names, feed)
        except Exception as e:  # noqa: BLE001  onnxruntime's own error types
            raise RuntimeError(f'onnxruntime could not run {self.path} on an input of shape {list(inputs.shape)}: '
                               f'{str(e).splitlines()[0][:300]}') from None
        return [{k: torch.from_numpy(v) for k, v in dets.items()} for dets in detections_of(outputs)]

    def predict(self, inputs: Tensor, data_samples: list) -> list:
        """mmdet's ``predict(inputs, data_samples, rescale=True)``: the samples with their ``pred_instances``.

        Args:
            inputs (Tensor): The batch after the config's ``data_preprocessor``.
            data_samples (list[DetDataSample]): Its samples (``img_shape``, ``scale_factor``, ``ori_shape``).

        Returns:
            list[DetDataSample]: ``data_samples``, each with ``pred_instances`` (``bboxes`` in the original image,
            ``scores``, ``labels``, and bool ``masks`` of the original image's size for a detector with masks).
        """
        from mmengine.structures import InstanceData
        shapes = torch.tensor([sample.metainfo['img_shape'][:2] for sample in data_samples])
        for sample, dets in zip(data_samples, self.run(inputs, shapes)):
            scale = dets['boxes'].new_tensor(sample.metainfo['scale_factor']).repeat(2)
            instances = InstanceData(bboxes=dets['boxes'] / scale, scores=dets['scores'], labels=dets['labels'])
            if self.with_mask:
                height, width = sample.metainfo['ori_shape'][:2]
                instances.masks = paste_masks(dets['masks'], instances.bboxes, height, width, self.mask_thr_binary)
            sample.pred_instances = instances
        return data_samples


def _detections(samples: list) -> list[dict]:
    keys = dict(boxes='bboxes', scores='scores', labels='labels', masks='masks')
    return [{ours: getattr(s.pred_instances, theirs) for ours, theirs in keys.items() if theirs in s.pred_instances}
            for s in samples]


def _check_labels(samples: list, classes: int, onnx_file: str) -> None:
    labels = [int(s.pred_instances.labels.max()) for s in samples if len(s.pred_instances.labels)]
    if classes and labels and max(labels) >= classes:
        raise ValueError(f'{onnx_file} detects class {max(labels)}, but the config\'s test split has {classes} classes: '
                         'use the config the file was exported from')


def _metrics_asked(cfg: Config) -> set[str]:
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    asked = set()
    for evaluator in evaluators:
        metric = evaluator.get('metric', 'bbox')
        asked.update([metric] if isinstance(metric, str) else metric)
    return asked


def evaluate_onnx(cfg: Config, onnx_file: str, checkpoint: str | None = None, threads: int | None = None,
                  use_ema: bool = True, metrics_out: str | None = None, force: bool = False) -> dict:
    """What tools/test_onnx.py does: evaluates an end-to-end ONNX detector on ``cfg``'s test split with onnxruntime,
    and with ``checkpoint`` the PyTorch deploy form beside it.

    Args:
        cfg (Config): The config the file was exported from (its test data, preprocessing and evaluator are used).
        onnx_file (str): The file (``tools/export_onnx.py --part detector``).
        checkpoint (str | None): The checkpoint it was exported from, to evaluate and time PyTorch's deploy form on
            the same batches and compare the detections. Defaults to None.
        threads (int | None): CPU threads of both; None for PyTorch's current number. Defaults to None.
        use_ema (bool): Load the checkpoint's EMA weights when it has them. Defaults to True.
        metrics_out (str | None): Also write the result to this JSON file (checked first, written whole).
            Defaults to None.
        force (bool): Replace ``metrics_out`` if it exists. Defaults to False.

    Returns:
        dict: ``images``, ``threads``, ``backends`` (per backend, ``onnxruntime`` and ``pytorch``: the evaluator's
        metrics, ``ms_per_image``), ``agreement`` (None without ``checkpoint``: the comparison, pasted masks
        included).

    Raises:
        FileNotFoundError, ValueError: a missing or foreign file, a checkpoint that does not fit ``cfg``, data the
            run cannot use, a file without masks for a config evaluating them.
    """
    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    if metrics_out:
        check_output(metrics_out, force, inputs=[onnx_file] + ([checkpoint] if checkpoint else []),
                     what='metrics file')
    threads = threads or torch.get_num_threads()
    rcnn_cfg = (cfg.model.get('test_cfg') or {}).get('rcnn') or {}
    detector = OnnxDetector(onnx_file, threads, rcnn_cfg.get('mask_thr_binary', 0.5))
    if 'segm' in _metrics_asked(cfg) and not detector.with_mask:
        raise ValueError(f'{onnx_file} gives no masks, but the config\'s test_evaluator asks for segm metrics: use the '
                         'config the file was exported from')
    check_data(cfg, ('test',))
    model = None
    if checkpoint:
        model = deploy_copy(load_model(cfg, checkpoint, use_ema).model)[0]
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import MODELS
    loader = Runner.build_dataloader(cfg.test_dataloader)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    backends = {'onnxruntime': detector.predict}
    if model is not None:
        backends['pytorch'] = model.predict
    evaluators = {name: Evaluator(copy.deepcopy(cfg.test_evaluator)) for name in backends}
    for evaluator in evaluators.values():
        evaluator.dataset_meta = loader.dataset.metainfo
    classes = len(loader.dataset.metainfo.get('classes') or ())
    seconds = dict.fromkeys(backends, 0.0)
    agreement = [] if model is not None else None
    logger = MMLogger.get_current_instance()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for step, data in enumerate(loader):
                data = preprocessor(data, False)
                if step == 0:  # warm-up, untimed
                    for predict in backends.values():
                        predict(data['inputs'], copy.deepcopy(data['data_samples']))
                results = {}
                for name, predict in backends.items():
                    samples = copy.deepcopy(data['data_samples'])
                    start = time.perf_counter()
                    results[name] = predict(data['inputs'], samples)
                    seconds[name] += time.perf_counter() - start
                    _check_labels(results[name], classes, onnx_file)
                    evaluators[name].process(data_samples=results[name], data_batch=data)
                if agreement is not None:
                    agreement.append(compare_detections(_detections(results['pytorch']),
                                                        _detections(results['onnxruntime'])))
                if (step + 1) % 10 == 0:
                    logger.info(f'evaluated {step + 1}/{len(loader)} batches')
    finally:
        torch.set_num_threads(previous)
    images = len(loader.dataset)
    result = dict(images=images, threads=threads, onnx_file=onnx_file, checkpoint=checkpoint, backends={},
                  agreement=None)
    for name, evaluator in evaluators.items():
        metrics = {k: float(v) for k, v in evaluator.evaluate(images).items()}
        result['backends'][name] = dict(metrics, ms_per_image=seconds[name] / images * 1e3)
    if agreement is not None:
        first = next((f'batch {i}, {a["first_disagreement"]}' for i, a in enumerate(agreement)
                      if a['first_disagreement']), None)
        result['agreement'] = dict(images=sum(a['images'] for a in agreement),
                                   agreeing=sum(a['agreeing'] for a in agreement),
                                   detections=sum(a['detections'] for a in agreement),
                                   max_box_diff=max(a['max_box_diff'] for a in agreement),
                                   max_score_diff=max(a['max_score_diff'] for a in agreement),
                                   first_disagreement=first)
    if metrics_out:
        with atomic_output(metrics_out) as tmp, open(tmp, 'w') as f:
            json.dump(result, f, indent=2)
    return result


def format_evaluation(result: dict) -> str:
    """:func:`evaluate_onnx`'s result as a Markdown table and a line on how the two backends agree."""
    rows = ['| backend | ' + ' | '.join(h for h, _ in COLUMNS) + ' | ms/image | threads |',
            '|---|' + '---|' * (len(COLUMNS) + 2)]
    for name, metrics in result['backends'].items():
        values = ' | '.join('-' if key not in metrics else f'{metrics[key]:.3f}' for _, key in COLUMNS)
        rows.append(f'| {name} | {values} | {metrics["ms_per_image"]:.1f} | {result["threads"]} |')
    text = '\n'.join(rows)
    agreement = result.get('agreement')
    if agreement:
        text += (f'\n\nPyTorch vs onnxruntime, box by box: {agreement["agreeing"]}/{agreement["images"]} images agree '
                 f'({agreement["detections"]} detections; max box diff {agreement["max_box_diff"]:.2e} px, max score '
                 f'diff {agreement["max_score_diff"]:.2e})')
        if agreement['first_disagreement']:
            text += f'; first disagreement: {agreement["first_disagreement"]}'
    return text + f'\n\n{result["images"]} images; ms/image: the model alone (no data loading, preprocessing, metric)'
