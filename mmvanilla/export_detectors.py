"""Detectors end to end, for ONNX: the network and mmdet's post-processing in one module, image in, detections out.

:func:`end2end_detector` wraps an mmdet detector in a module whose ``forward(input, image_shape)`` does what the
detector's ``predict`` does, in batched tensor operations with fixed-size outputs, so that the whole of it exports to
one ONNX graph with standard operators:

- single-stage detectors with anchor heads and mmdet's default post-processing (RetinaNet, and heads like it):
  per level the ``nms_pre`` best (anchor, class) pairs above ``score_thr``, :class:`DeltaXYWHBBoxCoder` decoding
  clipped to the image, boxes wider and taller than ``min_bbox_size``, NMS per class, the ``max_per_img`` best
  (``bbox_head.predict_by_feat``);
- two-stage detectors with ``RPNHead`` and ``StandardRoIHead`` (Faster R-CNN, Mask R-CNN): the RPN's proposals (per
  level ``nms_pre``, decoding, NMS per level, ``max_per_img``), multi-level RoIAlign, the box head, decoding per class,
  NMS per class, ``max_per_img``; then the mask head on the detections, each mask the map of its box's class.

NMS is ONNX's ``NonMaxSuppression``, RoIAlign ONNX's ``RoiAlign`` (opset 16: ``coordinate_transformation_mode=
'half_pixel'``, mmcv's ``aligned=True``), through two PyTorch operators this module defines,
``mmvanilla::non_max_suppression`` and ``mmvanilla::roi_align``: in PyTorch they run mmcv's ``nms`` and
``roi_align``, the kernels mmdet uses, and :func:`onnx_translations` gives the exporter their ONNX form.

The contract of the module (and of the exported graph):

- inputs: ``input``, float32 ``(N, 3, H, W)``, the images after the config's ``data_preprocessor`` (normalized,
  channels in the model's order, padded at the bottom and right to a multiple of ``pad_size_divisor``); and
  ``image_shape``, int64 ``(N, 2)``, the ``(height, width)`` of each image inside ``input`` before padding (mmdet's
  ``img_shape``: boxes are clipped to it);
- outputs, padded to ``max_per_img`` (``D``) detections per image, best first: ``boxes`` float32 ``(N, D, 4)`` as
  ``(x1, y1, x2, y2)`` in the pixels of ``input``; ``scores`` float32 ``(N, D)``; ``labels`` int64 ``(N, D)``;
  ``num_detections`` int64 ``(N,)``, how many rows of each image are detections (the others are zeros, label -1);
  for a detector with masks ``masks`` float32 ``(N, D, h, w)``, the mask head's probabilities (``h = w = 28`` in
  Mask R-CNN) for each detection's class, in its box.

Not in the module: preprocessing, the rescaling of boxes to the original image (divide by the ``scale_factor`` of
the resize), and pasting masks into the image (:func:`mmvanilla.onnx_eval.paste_masks` does both as mmdet does).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ['End2EndSingleStage', 'End2EndTwoStage', 'OUTPUT_NAMES', 'coarsest_stride', 'compare_detections',
           'detections_of', 'end2end_detector', 'non_max_suppression', 'onnx_translations', 'roi_align']

#: The graph's outputs, in order (``masks`` only for a detector with a mask head).
OUTPUT_NAMES = ('boxes', 'scores', 'labels', 'num_detections', 'masks')
SUPPORTED = ('single-stage detectors with an anchor head, DeltaXYWHBBoxCoder and mmdet\'s default post-processing '
             '(RetinaNet and heads like it), and two-stage detectors with RPNHead and StandardRoIHead '
             '(Faster R-CNN, Mask R-CNN)')
_NEG_INF = float('-inf')

if not hasattr(torch.library, 'custom_op'):  # the operators below need torch >= 2.4, the exporter torch >= 2.6
    raise RuntimeError(f'detectors export and run end to end with torch 2.6 or later (its torch.export-based ONNX '
                       f'exporter); this is torch {torch.__version__}: use a newer torch for export and test_onnx')


@torch.library.custom_op('mmvanilla::non_max_suppression', mutates_args=())
def non_max_suppression(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """ONNX's ``NonMaxSuppression`` without a limit per class, the finite scores as candidates.

    For each image ``b`` and class ``c``, greedy NMS over ``boxes[b]`` ranked by ``scores[b, c]`` (mmcv's ``nms``:
    a box is dropped when its IoU with a kept one is above ``iou_threshold``); boxes whose score is ``-inf`` take no
    part.

    Args:
        boxes (Tensor): ``(B, K, 4)`` boxes ``(x1, y1, x2, y2)``.
        scores (Tensor): ``(B, C, K)`` scores, ``-inf`` for boxes that are not candidates of that class.
        iou_threshold (float): The IoU above which a box is suppressed.

    Returns:
        Tensor: ``(M, 3)`` int64 rows ``(b, c, k)`` of the kept boxes, per image and class best first.
    """
    from mmcv.ops import nms
    selected = []
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            candidates = torch.nonzero(scores[b, c] > _NEG_INF).squeeze(1)
            if candidates.numel():
                _, keep = nms(boxes[b, candidates].contiguous(), scores[b, c, candidates].contiguous(), iou_threshold)
                kept = candidates[keep]
                selected.append(torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], 1))
    return torch.cat(selected) if selected else torch.zeros((0, 3), dtype=torch.long, device=boxes.device)


@non_max_suppression.register_fake
def _(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.long)


@torch.library.custom_op('mmvanilla::roi_align', mutates_args=())
def roi_align(features: Tensor, rois: Tensor, batch_indices: Tensor, output_height: int, output_width: int,
              spatial_scale: float, sampling_ratio: int) -> Tensor:
    """ONNX's ``RoiAlign`` (average, ``half_pixel``), which is mmcv's ``roi_align`` with ``aligned=True``.

    Args:
        features (Tensor): ``(N, C, H, W)`` feature maps.
        rois (Tensor): ``(R, 4)`` boxes ``(x1, y1, x2, y2)`` in input pixels.
        batch_indices (Tensor): ``(R,)`` int64, the image of each box.
        output_height (int): Height of each output.
        output_width (int): Width of each output.
        spatial_scale (float): The features' scale (1 / stride).
        sampling_ratio (int): Sampling points per bin side; 0 for ``ceil(box size / output size)``.

    Returns:
        Tensor: ``(R, C, output_height, output_width)``.
    """
    if rois.shape[0] == 0:
        return features.new_zeros((0, features.shape[1], output_height, output_width))
    from mmcv.ops import roi_align as mmcv_roi_align
    rois = torch.cat([batch_indices[:, None].to(rois), rois], 1).contiguous()
    return mmcv_roi_align(features.contiguous(), rois, (output_height, output_width), spatial_scale, sampling_ratio,
                          'avg', True)


@roi_align.register_fake
def _(features: Tensor, rois: Tensor, batch_indices: Tensor, output_height: int, output_width: int,
      spatial_scale: float, sampling_ratio: int) -> Tensor:
    return features.new_empty((rois.shape[0], features.shape[1], output_height, output_width))


def onnx_translations() -> dict:
    """The ONNX form of this module's operators, for ``torch.onnx.export(custom_translation_table=...)``.

    Returns:
        dict: operator overload -> onnxscript function.
    """
    from onnxscript import opset18 as op

    def nms(boxes, scores, iou_threshold: float):
        return op.NonMaxSuppression(boxes, scores, op.Constant(value_int=2 ** 63 - 1),
                                    op.Constant(value_float=iou_threshold), op.Constant(value_float=_NEG_INF),
                                    center_point_box=0)

    def align(features, rois, batch_indices, output_height: int, output_width: int, spatial_scale: float,
              sampling_ratio: int):
        return op.RoiAlign(features, rois, batch_indices, coordinate_transformation_mode='half_pixel', mode='avg',
                           output_height=output_height, output_width=output_width, sampling_ratio=sampling_ratio,
                           spatial_scale=spatial_scale)

    return {torch.ops.mmvanilla.non_max_suppression.default: nms, torch.ops.mmvanilla.roi_align.default: align}


def decode_boxes(coder, priors: Tensor, deltas: Tensor, image_shape: Tensor) -> Tensor:
    """mmdet's ``delta2bbox`` (the same operations in the same order) on batched, broadcast tensors.

    Args:
        coder (DeltaXYWHBBoxCoder): The head's box coder (means, stds, clipping).
        priors (Tensor): ``(N, ..., 4)`` anchors or proposals.
        deltas (Tensor): Deltas broadcasting with ``priors``.
        image_shape (Tensor): ``(N, 2)`` height and width each image's boxes are clipped to.

    Returns:
        Tensor: The boxes, ``(x1, y1, x2, y2)``.
    """
    means = deltas.new_tensor(coder.means)
    stds = deltas.new_tensor(coder.stds)
    denorm = deltas * stds + means
    dxy, dwh = denorm[..., :2], denorm[..., 2:]
    pxy = (priors[..., :2] + priors[..., 2:]) * 0.5
    pwh = priors[..., 2:] - priors[..., :2]
    dxy_wh = pwh * dxy
    max_ratio = abs(math.log(16 / 1000))  # the coder's default wh_ratio_clip, as mmdet's heads decode with it
    if coder.add_ctr_clamp:
        dxy_wh = torch.clamp(dxy_wh, max=coder.ctr_clamp, min=-coder.ctr_clamp)
        dwh = torch.clamp(dwh, max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if coder.clip_border:
        size = image_shape.to(boxes.dtype).flip(-1).repeat(1, 2)  # (w, h, w, h)
        size = size.reshape(size.shape[0], *[1] * (boxes.dim() - 2), 4)
        boxes = torch.minimum(boxes.clamp(min=0), size)
    return boxes


def _nms_kept(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``scores`` (``(B, C, K)``) where NMS keeps the box, ``-inf`` elsewhere."""
    selected = torch.ops.mmvanilla.non_max_suppression(boxes, scores, iou_threshold)
    b, c, k = selected.unbind(1)
    return torch.full_like(scores, _NEG_INF).index_put((b, c, k), scores[b, c, k])


def _best(kept: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``k`` best of each image's ``(C, K)`` scores in ``kept`` (``(N, C, K)``, ``-inf``: none), padded when
    there are fewer: their scores, classes, box indices (0 for padding) and whether each is one."""
    n, classes, count = kept.shape
    padded = torch.cat([kept.reshape(n, -1), kept.new_full((n, k), _NEG_INF)], 1)
    values, index = padded.topk(k, dim=1)
    valid = values > _NEG_INF
    index = torch.where(valid, index, 0)
    # Each column's class and box by lookup: dividing by the symbolic K does not export.
    device = kept.device
    class_of = torch.arange(classes, device=device)[:, None].expand(classes, count).reshape(-1)
    box_of = torch.arange(count, device=device)[None, :].expand(classes, count).reshape(-1)
    return values, class_of[index], box_of[index], valid


def _shifted_by_class(boxes: Tensor, classes: Tensor, valid: Tensor) -> Tensor:
    """The boxes mmdet's ``batched_nms`` runs NMS on: each shifted by its class times (the image's largest valid
    coordinate + 1). NMS per class needs no shift, but float32 rounds the shifted coordinates, and IoUs of the same
    numbers as mmdet's decide the same near the threshold.

    Args:
        boxes (Tensor): ``(N, ..., 4)``.
        classes (Tensor): The class of each box, broadcasting with ``boxes[..., 0]``.
        valid (Tensor): ``(N, ...)``, the boxes that are candidates.
    """
    largest = torch.where(valid[..., None], boxes, _NEG_INF).amax(dim=tuple(range(1, boxes.dim())), keepdim=True)
    largest = torch.where(largest > _NEG_INF, largest, 0)  # an image without candidates
    return boxes + classes.to(boxes.dtype)[..., None] * (largest + 1)


def _by_class(scores: Tensor, labels: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """``(N, C, K)`` scores of each candidate under its own class only, ``-inf`` elsewhere and for invalid ones."""
    classes = torch.arange(num_classes, device=labels.device)[None, :, None]
    return torch.where((labels[:, None, :] == classes) & valid[:, None, :], scores[:, None, :], _NEG_INF)


def _top_per_level(scores: Tensor, nms_pre: int) -> tuple[Tensor, Tensor]:
    """The ``nms_pre`` best entries of each row (all when ``nms_pre`` <= 0 or the row is shorter)."""
    k = scores.shape[1] if nms_pre <= 0 else torch.sym_min(nms_pre, scores.shape[1])
    return scores.topk(k, dim=1)


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """``values[n, index[n, i]]`` for ``(N, K, D)`` values and ``(N, M)`` indices."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def _detections(values: Tensor, boxes: Tensor, labels: Tensor, valid: Tensor) -> list[Tensor]:
    """The padded outputs: padding rows get zeros and label -1."""
    return [torch.where(valid[..., None], boxes, 0), torch.where(valid, values, 0), torch.where(valid, labels, -1),
            valid.sum(1)]


def _candidates(head: nn.Module, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], nms_pre: int,
                image_shape: Tensor) -> dict[str, Tensor]:
    """A dense head's best (anchor, class) pairs of each level, decoded: ``(N, K)`` ``scores``, ``labels`` and
    ``levels``, ``(N, K, 4)`` ``boxes`` (mmdet's ``filter_scores_and_topk`` before its score threshold, and the
    RPN's top-k, which is the same with one class)."""
    n = cls_scores[0].shape[0]
    priors = head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores], dtype=cls_scores[0].dtype,
                                              device=cls_scores[0].device)
    kept = dict(scores=[], labels=[], levels=[], deltas=[], priors=[])
    for level, (cls_score, bbox_pred, anchors) in enumerate(zip(cls_scores, bbox_preds, priors)):
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(n, -1, head.cls_out_channels)
        scores = cls_score.sigmoid() if head.use_sigmoid_cls else cls_score.softmax(-1)[..., :-1]
        num_classes = scores.shape[-1]
        scores, index = _top_per_level(scores.reshape(n, -1), nms_pre)
        anchor_index = index // num_classes
        deltas = bbox_pred.permute(0, 2, 3, 1).reshape(n, -1, head.bbox_coder.encode_size)
        kept['scores'].append(scores)
        kept['labels'].append(index % num_classes)
        kept['levels'].append(torch.full_like(index, level))
        kept['deltas'].append(_gather(deltas, anchor_index))
        kept['priors'].append(anchors[anchor_index])
    kept = {key: torch.cat(values, 1) for key, values in kept.items()}
    kept['boxes'] = decode_boxes(head.bbox_coder, kept.pop('priors'), kept.pop('deltas'), image_shape)
    return kept


def _larger_than(boxes: Tensor, size: float) -> Tensor:
    """Whether each box is wider and taller than ``size`` (mmdet's ``min_bbox_size`` filter; all when < 0)."""
    if size < 0:
        return torch.ones_like(boxes[..., 0], dtype=torch.bool)
    return (boxes[..., 2] - boxes[..., 0] > size) & (boxes[..., 3] - boxes[..., 1] > size)


def _nms_problems(cfg, where: str) -> list[str]:
    nms = (cfg or {}).get('nms') or {}
    if nms.get('type', 'nms') != 'nms' or nms.get('class_agnostic') or 'iou_threshold' not in nms:
        return [f'{where}.nms={dict(nms)} is not plain NMS per class (type=\'nms\', iou_threshold)']
    return []


class End2EndSingleStage(nn.Module):
    """A single-stage mmdet detector with its post-processing, as batched tensor operations (see the module's
    contract).

    Args:
        detector (nn.Module): An mmdet ``SingleStageDetector`` that :func:`end2end_detector` accepts.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        cfg = detector.bbox_head.test_cfg
        self.nms_pre = int(cfg.get('nms_pre', -1))
        self.score_thr = float(cfg.get('score_thr', 0))
        self.min_bbox_size = float(cfg.get('min_bbox_size', -1))
        self.iou_threshold = float(cfg.nms.iou_threshold)
        self.max_per_img = int(cfg.max_per_img)

    def forward(self, input: Tensor, image_shape: Tensor) -> list[Tensor]:
        head = self.detector.bbox_head
        outs = self.detector._forward(input)
        if len(outs) != 2:
            raise ValueError(f'{type(head).__name__} gives {len(outs)} kinds of output (score factors?): only heads '
                             'with class scores and box deltas export')
        found = _candidates(head, *outs, self.nms_pre, image_shape)
        boxes, scores = found['boxes'], found['scores']
        valid = (scores > self.score_thr) & _larger_than(boxes, self.min_bbox_size)
        kept = _nms_kept(_shifted_by_class(boxes, found['labels'], valid),
                         _by_class(scores, found['labels'], valid, head.num_classes), self.iou_threshold)
        values, labels, index, valid = _best(kept, self.max_per_img)
        return _detections(values, _gather(boxes, index), labels, valid)


def _roi_features(extractor: nn.Module, feats: tuple[Tensor, ...], rois: Tensor, batch_indices: Tensor) -> Tensor:
    """mmdet's ``SingleRoIExtractor``: each box ``(R, 4)`` of image ``batch_indices`` (``(R,)``) from the level its size
    maps to."""
    layers = extractor.roi_layers
    height, width = layers[0].output_size

    def align(level: int, boxes: Tensor, images: Tensor) -> Tensor:
        layer = layers[level]
        return torch.ops.mmvanilla.roi_align(feats[level], boxes, images, height, width,
                                             float(layer.spatial_scale), int(layer.sampling_ratio))

    if len(layers) == 1:
        return align(0, rois, batch_indices)
    levels = extractor.map_roi_levels(torch.cat([batch_indices[:, None].to(rois), rois], 1), len(layers))
    parts, order = [], []
    for level in range(len(layers)):
        index = torch.nonzero(levels == level).squeeze(1)
        parts.append(align(level, rois[index], batch_indices[index]))
        order.append(index)
    # Back in the boxes' order: one gather by the inverse permutation (a scatter per level costs more).
    return torch.cat(parts)[torch.argsort(torch.cat(order))]


class End2EndTwoStage(nn.Module):
    """A two-stage mmdet detector (RPN, then RoI heads) with its post-processing, as batched tensor operations (see
    the module's contract).

    Args:
        detector (nn.Module): An mmdet ``TwoStageDetector`` that :func:`end2end_detector` accepts.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        rpn_cfg, rcnn_cfg = detector.rpn_head.test_cfg, detector.roi_head.test_cfg
        self.rpn_nms_pre = int(rpn_cfg.get('nms_pre', -1))
        self.rpn_min_bbox_size = float(rpn_cfg.get('min_bbox_size', -1))
        self.rpn_iou_threshold = float(rpn_cfg.nms.iou_threshold)
        self.num_proposals = int(rpn_cfg.max_per_img)
        self.score_thr = float(rcnn_cfg.get('score_thr', 0))
        self.iou_threshold = float(rcnn_cfg.nms.iou_threshold)
        self.max_per_img = int(rcnn_cfg.max_per_img)

    def proposals(self, feats: tuple[Tensor, ...], image_shape: Tensor) -> tuple[Tensor, Tensor]:
        """The RPN's proposals, ``(N, P, 4)``, and which of them are proposals (``(N, P)``), P = ``max_per_img``."""
        cls_scores, bbox_preds = self.detector.rpn_head(feats)
        found = _candidates(self.detector.rpn_head, cls_scores, bbox_preds, self.rpn_nms_pre, image_shape)
        boxes = found['boxes']
        valid = _larger_than(boxes, self.rpn_min_bbox_size)
        # NMS within each level, as mmdet's RPN (the level as the class)
        kept = _nms_kept(_shifted_by_class(boxes, found['levels'], valid),
                         _by_class(found['scores'], found['levels'], valid, len(cls_scores)), self.rpn_iou_threshold)
        _, _, index, valid = _best(kept, self.num_proposals)
        return _gather(boxes, index), valid

    def forward(self, input: Tensor, image_shape: Tensor) -> list[Tensor]:
        detector = self.detector
        roi_head = detector.roi_head
        feats = detector.extract_feat(input)
        proposals, proposal_valid = self.proposals(feats, image_shape)
        n, count = proposals.shape[:2]
        batch_indices = torch.arange(n, device=input.device)[:, None].expand(n, count).reshape(-1)
        cls_score, bbox_pred = roi_head.bbox_head(
            _roi_features(roi_head.bbox_roi_extractor, feats, proposals.reshape(-1, 4), batch_indices))
        scores = cls_score.softmax(-1)[:, :-1].reshape(n, count, -1)
        num_classes = scores.shape[-1]
        deltas = bbox_pred.reshape(n, count, -1, roi_head.bbox_head.bbox_coder.encode_size)
        boxes = decode_boxes(roi_head.bbox_head.bbox_coder, proposals[:, :, None, :], deltas, image_shape)
        boxes = boxes.expand(n, count, num_classes, 4)
        valid = (scores > self.score_thr) & proposal_valid[..., None]
        # NMS per class, each (image, class) as a batch of ONNX's NonMaxSuppression with its own boxes
        shifted = _shifted_by_class(boxes, torch.arange(num_classes, device=boxes.device), valid)
        scores = torch.where(valid, scores, _NEG_INF).permute(0, 2, 1).reshape(n * num_classes, 1, count)
        kept = _nms_kept(shifted.permute(0, 2, 1, 3).reshape(n * num_classes, count, 4), scores,
                         self.iou_threshold).reshape(n, num_classes, count)
        boxes = boxes.permute(0, 2, 1, 3)
        values, labels, index, valid = _best(kept, self.max_per_img)
        boxes = _gather(boxes.reshape(n, num_classes * count, 4), labels * count + index)
        outputs = _detections(values, boxes, labels, valid)
        if roi_head.with_mask:
            outputs.append(self.masks(feats, outputs[0], outputs[2]))
        return outputs

    def masks(self, feats: tuple[Tensor, ...], boxes: Tensor, labels: Tensor) -> Tensor:
        """The mask head's probabilities ``(N, D, h, w)`` for each detection's class, in its box (zeros for padding:
        the head runs on the detections only)."""
        roi_head = self.detector.roi_head
        n, count = boxes.shape[:2]
        labels = labels.reshape(-1)
        index = torch.nonzero(labels >= 0).squeeze(1)
        # One more row (row 0, dropped below): onnxruntime cannot run the head's GroupNorm reshapes on no rows.
        rows = torch.cat([index, index.new_zeros(1)])
        images = torch.div(rows, count, rounding_mode='floor')
        mask_preds = roi_head.mask_head(
            _roi_features(roi_head.mask_roi_extractor, feats, boxes.reshape(-1, 4)[rows], images))
        if roi_head.mask_head.class_agnostic:
            mask_preds = mask_preds[:-1, 0]
        else:
            channel = labels.clamp(min=0)[rows][:, None, None, None].expand(-1, 1, *mask_preds.shape[2:])
            mask_preds = mask_preds.gather(1, channel)[:-1, 0]
        masks = mask_preds.new_zeros((n * count, *mask_preds.shape[1:]))
        return masks.index_put((index,), mask_preds.sigmoid()).reshape(n, count, *mask_preds.shape[1:])


def _overridden(obj, base: type, *methods: str) -> list[str]:
    return [m for m in methods if getattr(type(obj), m) is not getattr(base, m)]


def _dense_head_problems(head: nn.Module, base: type) -> list[str]:
    """Why ``head`` (a dense head, or an RPN head with ``base`` RPNHead) does not export, if it does not."""
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    name = type(head).__name__
    if not isinstance(head, base):
        return [f'{name} is not a {base.__name__}']
    problems = [f'{name} has its own {m}' for m in _overridden(
        head, base, 'predict', 'predict_by_feat', '_predict_by_feat_single', '_bbox_post_process')]
    generator = getattr(head, 'prior_generator', None)
    if not isinstance(generator, AnchorGenerator) or _overridden(generator, AnchorGenerator,
                                                                 'single_level_grid_priors'):
        problems.append(f'{name} places its priors with {type(generator).__name__} (not an AnchorGenerator)')
    if type(getattr(head, 'bbox_coder', None)) is not DeltaXYWHBBoxCoder:
        problems.append(f'{name} decodes with {type(getattr(head, "bbox_coder", None)).__name__}')
    if getattr(getattr(head, 'loss_cls', None), 'custom_cls_channels', False):
        problems.append(f'{name} has custom class channels')
    return problems


def _two_stage_problems(model: nn.Module) -> list[str]:
    from mmcv.ops import RoIAlign
    from mmdet.models.dense_heads import RPNHead
    from mmdet.models.roi_heads import SingleRoIExtractor, StandardRoIHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
    if not getattr(model, 'with_rpn', False):
        return [f'{type(model).__name__} has no RPN (it takes proposals as input)']
    roi_head = model.roi_head
    problems = _dense_head_problems(model.rpn_head, RPNHead) + _nms_problems(model.rpn_head.test_cfg, 'test_cfg.rpn')
    problems += _nms_problems(roi_head.test_cfg, 'test_cfg.rcnn')
    if not isinstance(roi_head, StandardRoIHead) or _overridden(
            roi_head, StandardRoIHead, 'predict', 'predict_bbox', 'predict_mask', '_bbox_forward', '_mask_forward'):
        return problems + [f'its roi_head is a {type(roi_head).__name__}, not a StandardRoIHead']
    if roi_head.with_shared_head:
        problems.append('its roi_head has a shared head')
    extractors = [('bbox', roi_head.bbox_roi_extractor)] + ([('mask', roi_head.mask_roi_extractor)]
                                                            if roi_head.with_mask else [])
    for kind, extractor in extractors:
        if type(extractor) is not SingleRoIExtractor:
            problems.append(f'its {kind}_roi_extractor is a {type(extractor).__name__}')
        elif not all(isinstance(layer, RoIAlign) and layer.aligned and layer.pool_mode == 'avg' and
                     not layer.use_torchvision for layer in extractor.roi_layers):
            problems.append(f'its {kind}_roi_extractor is not mmcv\'s RoIAlign with aligned=True, pool_mode=\'avg\'')
    bbox_head = roi_head.bbox_head
    if not isinstance(bbox_head, BBoxHead) or _overridden(bbox_head, BBoxHead, 'predict_by_feat',
                                                          '_predict_by_feat_single'):
        problems.append(f'its bbox_head {type(bbox_head).__name__} is not a BBoxHead with mmdet\'s prediction')
    elif (type(bbox_head.bbox_coder) is not DeltaXYWHBBoxCoder or bbox_head.custom_cls_channels or
          not bbox_head.with_reg or not bbox_head.with_cls):
        problems.append(f'its bbox_head {type(bbox_head).__name__} does not classify and regress with '
                        'DeltaXYWHBBoxCoder and softmax scores')
    if roi_head.with_mask and (not isinstance(roi_head.mask_head, FCNMaskHead) or _overridden(
            roi_head.mask_head, FCNMaskHead, 'predict_by_feat', '_predict_by_feat_single')):
        problems.append(f'its mask_head is a {type(roi_head.mask_head).__name__}, not an FCNMaskHead')
    return problems


def coarsest_stride(model: nn.Module) -> int:
    """The largest stride of the detector's (or its RPN's) anchor levels: its coarsest feature map's."""
    head = model.rpn_head if getattr(model, 'with_rpn', False) else model.bbox_head
    return int(max(max(s) if isinstance(s, (tuple, list)) else s for s in head.prior_generator.strides))


def end2end_detector(model: nn.Module) -> nn.Module:
    """``model`` with its post-processing, for export: an :class:`End2EndSingleStage` or :class:`End2EndTwoStage`.

    Args:
        model (nn.Module): An mmdet detector (its own weights are used, not copied).

    Returns:
        nn.Module: The module, ``forward(input, image_shape)`` (see the module's contract).

    Raises:
        ValueError: a detector whose post-processing does not export, naming why and what does.
    """
    from mmdet.models.detectors import SingleStageDetector, TwoStageDetector
    name = type(model).__name__
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    if isinstance(model, SingleStageDetector):
        problems = _dense_head_problems(model.bbox_head, BaseDenseHead) + _nms_problems(model.bbox_head.test_cfg,
                                                                                          'test_cfg')
        wrapper = End2EndSingleStage
    elif isinstance(model, TwoStageDetector):
        problems, wrapper = _two_stage_problems(model), End2EndTwoStage
    else:
        problems, wrapper = ['it is neither a single-stage nor a two-stage mmdet detector'], None
    if problems:
        raise ValueError(f'{name} cannot be exported end to end: {"; ".join(problems)}. What exports end to end: '
                         f'{SUPPORTED}. Export its backbone with --part backbone.')
    return wrapper(model)


def detections_of(outputs: Sequence) -> list[dict]:
    """Each image's detections in the padded outputs (tensors or arrays, in :data:`OUTPUT_NAMES` order): a dict of
    ``boxes``, ``scores``, ``labels`` (and ``masks``) with the rows that are detections."""
    outputs = dict(zip(OUTPUT_NAMES, outputs))
    counts = outputs.pop('num_detections')
    return [{name: value[i][:int(counts[i])] for name, value in outputs.items()} for i in range(len(counts))]


def compare_detections(reference: Sequence[dict], other: Sequence[dict], rtol: float = 1e-3) -> dict:
    """Compares two runs' detections (e.g. PyTorch's and onnxruntime's), image by image and box by box.

    Float rounding may order near-equal scores differently, so detections are paired up by label and box (an
    optimal assignment) rather than by rank. Two images agree when they have as many detections and every pair has
    the same label, box coordinates within ``rtol * max(1, |coordinate|)``, scores within ``rtol``, and masks that
    agree: probability maps within ``rtol``, binary masks differing in at most 1 pixel + 1% of their union.

    Args:
        reference (Sequence[dict]): Per image, ``boxes`` ``(n, 4)``, ``scores`` ``(n,)``, ``labels`` ``(n,)`` and
            optionally ``masks`` ``(n, ...)``: tensors or arrays.
        other (Sequence[dict]): The same for the other run.
        rtol (float): The tolerance. Defaults to 1e-3.

    Returns:
        dict: ``images``, ``agreeing`` (images that agree), ``detections`` (in ``reference``), ``max_box_diff`` and
        ``max_score_diff`` (over the pairs), ``first_disagreement`` (a sentence, or None).

    Example:
        >>> import torch
        >>> a = dict(boxes=torch.tensor([[0., 0., 10., 10.], [5., 5., 20., 20.]]), scores=torch.tensor([.9, .8]),
        ...          labels=torch.tensor([1, 2]))
        >>> b = dict(boxes=a['boxes'].flip(0) + 1e-4, scores=a['scores'].flip(0), labels=a['labels'].flip(0))
        >>> result = compare_detections([a], [b])
        >>> result['agreeing'], result['detections'], result['first_disagreement']
        (1, 2, None)
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    def arrays(dets: dict) -> dict:
        return {k: np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in dets.items()
                if k in ('boxes', 'scores', 'labels', 'masks')}

    result = dict(images=len(reference), agreeing=0, detections=0, max_box_diff=0.0, max_score_diff=0.0,
                  first_disagreement=None)
    if len(reference) != len(other):
        result['first_disagreement'] = f'{len(reference)} images against {len(other)}'
        return result
    for i, (ref, out) in enumerate(zip(map(arrays, reference), map(arrays, other))):
        n = len(ref['boxes'])
        result['detections'] += n
        problem = None
        if len(out['boxes']) != n:
            problem = f'{n} detections against {len(out["boxes"])}'
        elif n:
            box_diff = np.abs(ref['boxes'][:, None, :] - out['boxes'][None, :, :]).max(-1)
            cost = np.where(ref['labels'][:, None] == out['labels'][None, :], box_diff, 1e9)
            rows, cols = linear_sum_assignment(cost)
            box_err = np.abs(ref['boxes'][rows] - out['boxes'][cols])
            score_err = np.abs(ref['scores'][rows] - out['scores'][cols])
            result['max_box_diff'] = max(result['max_box_diff'], float(box_err.max()))
            result['max_score_diff'] = max(result['max_score_diff'], float(score_err.max()))
            if (ref['labels'][rows] != out['labels'][cols]).any():
                problem = 'the labels differ'
            elif (box_err > rtol * np.maximum(1, np.abs(ref['boxes'][rows]))).any():
                problem = f'boxes differ by up to {box_err.max():.3g} pixels'
            elif (score_err > rtol).any():
                problem = f'scores differ by up to {score_err.max():.3g}'
            elif 'masks' in ref and 'masks' in out:
                a, b = ref['masks'][rows], out['masks'][cols]
                if a.dtype == bool:
                    union = (a | b).reshape(n, -1).sum(1)
                    bad = ((a != b).reshape(n, -1).sum(1) > 1 + 0.01 * union).any()
                else:
                    bad = (np.abs(a - b) > rtol).any()
                if bad:
                    problem = 'the masks differ'
        if problem is None:
            result['agreeing'] += 1
        elif result['first_disagreement'] is None:
            result['first_disagreement'] = f'image {i}: {problem}'
    return result
