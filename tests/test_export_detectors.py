"""Detectors end to end (mmvanilla/export_detectors.py): mmdet's predictions in batched tensor operations, and the
two operators' ONNX forms."""
import copy

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config

from mmvanilla.apis import build_model
from mmvanilla.export_detectors import (compare_detections, detections_of, end2end_detector, non_max_suppression,
                                        onnx_translations, roi_align)
from mmvanilla.onnx_eval import paste_masks

from .conftest import RETINANET, ROOT

MASK_RCNN = str(ROOT / 'configs/mask_rcnn_vanillanet_tiny_synthetic.py')


def faster_rcnn_config() -> Config:
    """The tiny Mask R-CNN without its mask branch: a Faster R-CNN."""
    cfg = Config.fromfile(MASK_RCNN)
    cfg.model.roi_head.mask_head = None
    cfg.model.roi_head.mask_roi_extractor = None
    return cfg


CONFIGS = {'RetinaNet': lambda: Config.fromfile(RETINANET), 'Mask R-CNN': lambda: Config.fromfile(MASK_RCNN),
           'Faster R-CNN': faster_rcnn_config}


def padded_batch(seed: int = 0):
    """Two images of different sizes padded into one 96x128 batch, as mmdet's data_preprocessor pads them."""
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))
    shapes = torch.tensor([[96, 100], [70, 128]])
    samples = [DetDataSample(metainfo=dict(img_shape=tuple(s), ori_shape=tuple(s), scale_factor=(1.0, 1.0),
                                           batch_input_shape=(96, 128), pad_shape=(96, 128))) for s in shapes.tolist()]
    return x, shapes, samples


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CONFIGS))
def test_the_module_gives_exactly_mmdets_predictions(name):
    torch.manual_seed(0)  # random weights (deploy form): many overlapping detections of all classes, a hard case
    model = build_model(CONFIGS[name](), deploy=True).eval()
    x, shapes, samples = padded_batch()
    with torch.no_grad():
        expected = model.predict(x, copy.deepcopy(samples), rescale=True)
        outputs = end2end_detector(model)(x, shapes)
    assert len(outputs) == (5 if name == 'Mask R-CNN' else 4)
    for want, got, (height, width) in zip(expected, detections_of(outputs), shapes.tolist()):
        want = want.pred_instances
        assert len(got['boxes']) == len(want.bboxes) > 0
        assert torch.equal(got['boxes'], want.bboxes) and torch.equal(got['scores'], want.scores)
        assert torch.equal(got['labels'], want.labels)
        if name == 'Mask R-CNN':
            assert got['masks'].shape[1:] == (28, 28)
            assert torch.equal(paste_masks(got['masks'], got['boxes'], height, width), want.masks)


def test_the_outputs_are_padded_to_max_per_img_with_a_count():
    cfg = Config.fromfile(RETINANET)
    cfg.model.test_cfg.score_thr = 0.999  # hardly anything passes
    model = build_model(cfg, deploy=True).eval()
    x, shapes, _ = padded_batch()
    with torch.no_grad():
        boxes, scores, labels, counts = end2end_detector(model)(x, shapes)
    assert boxes.shape == (2, cfg.model.test_cfg.max_per_img, 4) and counts.tolist() == [0, 0]
    assert (labels == -1).all() and (scores == 0).all() and (boxes == 0).all()


def test_nms_keeps_per_image_and_class_the_best_boxes_and_ignores_minus_infinity():
    boxes = torch.tensor([[[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.], [40., 40., 50., 50.]]])
    scores = torch.tensor([[[0.9, 0.8, 0.7, float('-inf')],  # class 0: box 1 overlaps box 0 (IoU 0.68)
                            [0.1, 0.95, float('-inf'), 0.5]]])  # class 1: box 0 overlaps box 1
    kept = non_max_suppression(boxes, scores, 0.5)
    assert kept.tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 1], [0, 1, 3]]
    assert non_max_suppression(boxes, scores, 0.7).tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 1],
                                                                [0, 1, 3], [0, 1, 0]]
    assert non_max_suppression(boxes, torch.full_like(scores, float('-inf')), 0.5).shape == (0, 3)


class Operators(torch.nn.Module):
    def forward(self, features, boxes, scores):
        batch_indices = torch.zeros(boxes.shape[1], dtype=torch.long)
        aligned = torch.ops.mmvanilla.roi_align(features, boxes[0], batch_indices, 7, 5, 0.25, 0)
        return aligned, torch.ops.mmvanilla.non_max_suppression(boxes, scores, 0.5)


@pytest.mark.slow
def test_the_operators_export_as_onnx_roialign_and_nonmaxsuppression_and_agree(tmp_path):
    import onnx
    import onnxruntime as ort
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(1, 8, 20, 24, generator=gen)
    corners = torch.rand(30, 2, generator=gen) * torch.tensor([90., 70.])
    boxes = torch.cat([corners, corners + 2 + torch.rand(30, 2, generator=gen) * 40], 1)[None]
    scores = torch.rand(1, 3, 30, generator=gen)
    scores[0, 1, :10] = float('-inf')
    count = torch.export.Dim('boxes')
    program = torch.onnx.export(Operators().eval(), (features, boxes, scores), None, dynamo=True,
                                custom_translation_table=onnx_translations(),
                                dynamic_shapes=({}, {1: count}, {2: count}))
    program.save(str(tmp_path / 'ops.onnx'))
    ops = {node.op_type for node in onnx.load(str(tmp_path / 'ops.onnx')).graph.node}
    assert {'RoiAlign', 'NonMaxSuppression'} <= ops
    session = ort.InferenceSession(str(tmp_path / 'ops.onnx'), providers=['CPUExecutionProvider'])
    feed = dict(zip([i.name for i in session.get_inputs()], [features.numpy(), boxes.numpy(), scores.numpy()]))
    aligned, kept = session.run(None, feed)
    want_aligned = roi_align(features, boxes[0], torch.zeros(30, dtype=torch.long), 7, 5, 0.25, 0)
    np.testing.assert_allclose(aligned, want_aligned.numpy(), rtol=1e-5, atol=1e-6)
    assert kept.tolist() == non_max_suppression(boxes, scores, 0.5).tolist()


def test_detectors_whose_post_processing_does_not_export_are_refused_with_what_does():
    cfg = Config.fromfile(RETINANET)
    cfg.model.bbox_head = dict(type='FCOSHead', num_classes=4, in_channels=64, feat_channels=64, stacked_convs=1)
    with pytest.raises(ValueError, match=r'RetinaNet cannot be exported end to end: FCOSHead places its priors with '
                                         r'MlvlPointGenerator.*decodes with DistancePointBBoxCoder.*What exports end '
                                         r'to end: single-stage .*RetinaNet.*Mask R-CNN'):
        end2end_detector(build_model(cfg))
    cfg = Config.fromfile(MASK_RCNN)
    cfg.model.test_cfg.rcnn.nms = dict(type='soft_nms', iou_threshold=0.5)
    with pytest.raises(ValueError, match=r'MaskRCNN cannot be exported end to end: test_cfg.rcnn.nms=.*soft_nms.* is '
                                         r'not plain NMS per class'):
        end2end_detector(build_model(cfg))


def test_detections_are_compared_by_pairs_not_by_rank():
    boxes = torch.tensor([[0., 0., 10., 10.], [5., 5., 20., 20.]])
    a = dict(boxes=boxes, scores=torch.tensor([.5, .5]), labels=torch.tensor([0, 1]))
    swapped = dict(boxes=boxes.flip(0), scores=torch.tensor([.5, .5]), labels=torch.tensor([1, 0]))
    assert compare_detections([a], [swapped])['agreeing'] == 1
    moved = dict(a, boxes=boxes + torch.tensor([0., 0., 0., 0.5]))
    assert compare_detections([a], [moved])['first_disagreement'] == 'image 0: boxes differ by up to 0.5 pixels'
    relabelled = dict(a, labels=torch.tensor([0, 2]))
    assert compare_detections([a], [relabelled])['first_disagreement'] == 'image 0: the labels differ'
    fewer = {k: v[:1] for k, v in a.items()}
    assert compare_detections([a, a], [a, fewer])['first_disagreement'] == 'image 1: 2 detections against 1'
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[:, 2:8, 2:8] = True
    other = masks.clone()
    other[0, 2:4] = False
    assert compare_detections([dict(a, masks=masks)], [dict(a, masks=other)])['first_disagreement'] == (
        'image 0: the masks differ')
