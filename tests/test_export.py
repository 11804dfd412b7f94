"""ONNX export (mmvanilla/export.py, tools/export_onnx.py): the deploy form, checked with onnxruntime."""
import os
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmvanilla.apis import build_model
from mmvanilla.deploy import switch_to_deploy
from mmvanilla.export import (ExportableAdaptiveMaxPool2d, export_checkpoint, export_detector, export_onnx,
                              exporter_available, onnxruntime_session, select_part)
from mmvanilla.models import VanillaNet, VanillaNetClassifier
from mmvanilla.models.utils import set_act_lambda

from .conftest import RETINANET, ROOT, run_tool
from .models.test_layers import randomize_bns

# An older torch refuses the export with one line (tests/test_extras.py).
pytestmark = pytest.mark.skipif(not exporter_available(), reason=f'torch {torch.__version__} has no torch.export-based '
                                'ONNX exporter (torch >= 2.6)')

MASK_RCNN = str(ROOT / 'configs/mask_rcnn_vanillanet_tiny_synthetic.py')
TINY_ARCH = dict(stem_channels=8, widths=[16, 32], strides=[2, 2])
SHAPE = (64, 64)


def relative_error(ref: torch.Tensor, out: np.ndarray) -> float:
    return float((ref - torch.from_numpy(out)).abs().max() / ref.abs().max())


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """The tiny RetinaNet at lambda 1 (with random BN statistics), in training and deploy form, and at lambda 0.5."""
    root = tmp_path_factory.mktemp('ckpt')
    model = randomize_bns(build_model(Config.fromfile(RETINANET)))
    set_act_lambda(model, 1.0)
    torch.save(dict(state_dict=model.state_dict(), meta={}), root / 'train.pth')
    set_act_lambda(model, 0.5)
    torch.save(dict(state_dict=model.state_dict(), meta={}), root / 'half.pth')
    set_act_lambda(model, 1.0)
    switch_to_deploy(model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(deploy=True)), root / 'deploy.pth')
    return root


@pytest.mark.slow
def test_a_classifier_exports_its_logits_with_a_dynamic_batch_and_onnxruntime_agrees(tmp_path):
    net = randomize_bns(VanillaNetClassifier(TINY_ARCH, num_classes=10)).eval()
    net.set_act_lambda(1.0)
    report = export_onnx(net, tmp_path / 'net.onnx', input_shape=(1, 3, *SHAPE), output_names=['logits'])
    assert report['outputs'] == [dict(name='logits', shape=[1, 10])]
    assert report['max_rel_diff'] <= 1e-4 and report['reparameterized'] and report['opset'] >= 18
    assert report['files'] == [str(tmp_path / 'net.onnx')]

    x = torch.rand(3, 3, *SHAPE)  # another batch size than exported
    (logits,) = onnxruntime_session(tmp_path / 'net.onnx', threads=1).run(None, {'input': x.numpy()})
    with torch.no_grad():
        assert relative_error(net(x), logits) <= 1e-4


@pytest.mark.slow
def test_export_leaves_the_training_form_model_as_it_was(tmp_path):
    net = VanillaNetClassifier(TINY_ARCH, num_classes=10).train()
    net.set_act_lambda(1.0)
    keys = list(net.state_dict())
    export_onnx(net, tmp_path / 'net.onnx', input_shape=(1, 3, *SHAPE))
    assert list(net.state_dict()) == keys and net.training


def test_export_refuses_a_model_below_lambda_one_and_writes_nothing(tmp_path):
    net = VanillaNetClassifier(TINY_ARCH, num_classes=10)
    net.set_act_lambda(0.5)
    with pytest.raises(RuntimeError, match=r'lambda=0\.5.*DeepTrainingHook.*tools/reparameterize\.py'):
        export_onnx(net, tmp_path / 'net.onnx', input_shape=(1, 3, *SHAPE))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_failed_onnxruntime_check_writes_nothing_and_keeps_an_earlier_file(tmp_path):
    net = VanillaNetClassifier(TINY_ARCH, num_classes=10)
    net.set_act_lambda(1.0)
    with pytest.raises(RuntimeError, match='onnxruntime disagrees with PyTorch.*was not written'):
        export_onnx(net, tmp_path / 'net.onnx', input_shape=(1, 3, *SHAPE), rtol=-1.0)  # no error passes
    assert not list(tmp_path.iterdir())
    (tmp_path / 'net.onnx').write_bytes(b'an earlier export')
    with pytest.raises(RuntimeError, match='onnxruntime disagrees with PyTorch'):
        export_onnx(net, tmp_path / 'net.onnx', input_shape=(1, 3, *SHAPE), rtol=-1.0)
    assert os.listdir(tmp_path) == ['net.onnx'] and (tmp_path / 'net.onnx').read_bytes() == b'an earlier export'


def test_export_refuses_opsets_torch_cannot_write(tmp_path):
    with pytest.raises(ValueError, match='opset 13 is not supported'):
        export_onnx(torch.nn.Conv2d(3, 4, 1), tmp_path / 'conv.onnx', input_shape=(1, 3, 8, 8), opset=13)


@pytest.mark.slow
def test_a_model_torch_cannot_export_gets_a_short_error_naming_the_op(tmp_path):
    class FunctionalPool(torch.nn.Module):  # not an nn.AdaptiveMaxPool2d module, so not rewritten
        def forward(self, x):
            return torch.nn.functional.adaptive_max_pool2d(x, 3)

    with pytest.raises(RuntimeError, match='could not export FunctionalPool to ONNX: .*adaptive_max_pool2d'):
        export_onnx(FunctionalPool(), tmp_path / 'pool.onnx', input_shape=(1, 3, 8, 8))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('in_size, out_size', [((75, 75), 38), ((38, 39), 19), ((19, 19), 10), ((5, 5), 7),
                                              ((9, 9), (None, 4))])
def test_adaptive_max_pool_is_rewritten_exactly_in_ops_onnx_has(in_size, out_size):
    x = torch.randn(2, 3, *in_size)
    assert torch.equal(ExportableAdaptiveMaxPool2d(out_size)(x), torch.nn.AdaptiveMaxPool2d(out_size)(x))


@pytest.mark.slow
def test_a_backbone_with_adaptive_pools_exports(tmp_path):
    # Like the paper's 13_x1_5_ada_pool, which pools to fixed sizes: ONNX has no adaptive max-pool.
    net = VanillaNet(dict(stem_channels=8, widths=[16, 32], strides=[2, 1], pool_sizes=[5, None]), out_indices=(1,))
    net.set_act_lambda(1.0)
    report = export_onnx(net, tmp_path / 'ada.onnx', input_shape=(1, 3, *SHAPE))
    assert report['outputs'][0]['shape'] == [1, 32, 5, 5] and report['max_rel_diff'] <= 1e-4


@pytest.mark.slow
def test_the_detectors_backbone_exports_its_multi_scale_features(checkpoints, tmp_path):
    report = export_checkpoint(Config.fromfile(RETINANET), str(checkpoints / 'train.pth'), str(tmp_path / 'b.onnx'),
                               part='backbone', input_size=SHAPE)
    assert [o['name'] for o in report['outputs']] == ['stage1', 'stage2', 'stage3']
    assert [o['shape'] for o in report['outputs']] == [[1, 96, 8, 8], [1, 192, 4, 4], [1, 384, 2, 2]]
    assert report['max_rel_diff'] <= 1e-4 and report['checkpoint_form'] == 'training' and report['reparameterized']


@pytest.mark.slow
def test_retinanet_exports_up_to_its_raw_head_outputs_without_nms(checkpoints, tmp_path):
    cfg = Config.fromfile(RETINANET)
    report = export_checkpoint(cfg, str(checkpoints / 'train.pth'), str(tmp_path / 'det.onnx'), part='head',
                               input_size=SHAPE, batch_size=2)
    assert report['part'] == 'head' and 'NMS' in report['note'] and report['max_rel_diff'] <= 1e-4
    names = [o['name'] for o in report['outputs']]
    assert names == [f'cls_score_{i}' for i in range(5)] + [f'bbox_pred_{i}' for i in range(5)]
    assert report['outputs'][0]['shape'] == [2, 9 * 4, 8, 8]  # 9 anchors x 4 classes at stride 8
    assert report['preprocess']['mean'] == cfg.model.data_preprocessor.mean

    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(checkpoints / 'train.pth')['state_dict'])
    x = torch.rand(1, 3, *SHAPE)
    outputs = onnxruntime_session(tmp_path / 'det.onnx', threads=1).run(None, {'input': x.numpy()})
    with torch.no_grad():
        cls_scores, bbox_preds = model._forward(x)
    assert max(relative_error(r, o) for r, o in zip([*cls_scores, *bbox_preds], outputs)) <= 1e-4


@pytest.mark.slow
def test_a_deploy_form_checkpoint_exports_as_it_is(checkpoints, tmp_path):
    report = export_checkpoint(Config.fromfile(RETINANET), str(checkpoints / 'deploy.pth'),
                               str(tmp_path / 'det.onnx'), part='head', input_size=SHAPE)
    assert report['checkpoint_form'] == 'deploy' and not report['reparameterized']
    assert report['max_rel_diff'] <= 1e-4


def test_a_checkpoint_below_lambda_one_is_refused(checkpoints, tmp_path):
    with pytest.raises(RuntimeError, match=r'lambda=0\.5'):
        export_checkpoint(Config.fromfile(RETINANET), str(checkpoints / 'half.pth'), str(tmp_path / 'x.onnx'),
                          input_size=SHAPE)
    assert not list(tmp_path.iterdir())


def test_a_missing_or_foreign_checkpoint_is_named(checkpoints, tmp_path):
    cfg = Config.fromfile(RETINANET)
    with pytest.raises(FileNotFoundError, match='nope.pth not found'):
        export_checkpoint(cfg, str(tmp_path / 'nope.pth'), str(tmp_path / 'x.onnx'))
    (tmp_path / 'junk.pth').write_text('not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth is not a PyTorch checkpoint'):
        export_checkpoint(cfg, str(tmp_path / 'junk.pth'), str(tmp_path / 'x.onnx'))
    torch.save(dict(state_dict={'fc.weight': torch.zeros(2, 2)}), tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='holds no VanillaNet layer weights'):
        export_checkpoint(cfg, str(tmp_path / 'other.pth'), str(tmp_path / 'x.onnx'))
    cfg.model.bbox_head.num_classes = 3  # not the config the checkpoint was trained with
    with pytest.raises(ValueError, match='does not fit .*RetinaNet.*Use the config the checkpoint was trained with'):
        export_checkpoint(cfg, str(checkpoints / 'train.pth'), str(tmp_path / 'x.onnx'))
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.slow
def test_mask_rcnn_has_no_raw_head_outputs_and_its_backbone_exports(tmp_path):
    model = build_model(Config.fromfile(MASK_RCNN))
    set_act_lambda(model, 1.0)
    assert select_part(model, 'auto') == (model, 'detector')
    with pytest.raises(ValueError, match=r'MaskRCNN is not a single-stage detector.*--part detector'):
        select_part(model, 'head')
    backbone, part = select_part(model, 'backbone')
    report = export_onnx(backbone, tmp_path / 'b.onnx', input_shape=(1, 3, *SHAPE))
    assert part == 'backbone' and len(report['outputs']) == 4 and report['max_rel_diff'] <= 1e-4


def test_a_classification_model_exports_its_network_and_a_classifier_has_no_detector():
    net = VanillaNetClassifier(TINY_ARCH, num_classes=10)
    assert select_part(net, 'auto') == (net, 'classifier')
    assert select_part(net, 'backbone') == (net.backbone, 'backbone')
    wrapper = torch.nn.Module()
    wrapper.network = net  # the classification configs' ImageClassifier exposes the net as .network
    assert select_part(wrapper, 'auto') == (net, 'classifier')
    for part in ('detector', 'head'):
        with pytest.raises(ValueError, match='not an mmdet detector'):
            select_part(net, part)


@pytest.mark.slow
def test_the_tool_exports_checks_and_refuses_lambda_below_one(checkpoints, tmp_path):
    proc = run_tool('export_onnx.py', RETINANET, str(checkpoints / 'train.pth'), '--out', 'det.onnx', '--shape',
                    '64', '64', '--part', 'head', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'cls_score_0: [1, 36, 8, 8]' in proc.stdout and 'NMS are not in the graph' in proc.stdout
    assert float(re.search(r'max rel diff ([0-9.e+-]+)', proc.stdout).group(1)) <= 1e-4
    assert (tmp_path / 'det.onnx').is_file()

    proc = run_tool('export_onnx.py', RETINANET, str(checkpoints / 'half.pth'), '--out', 'half.onnx', cwd=tmp_path)
    assert proc.returncode == 2 and 'lambda=0.5' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'half.onnx').exists()


def onnxruntime_matches_mmdet(model, path, inputs, masks=False):
    """Runs the exported file on each (images, image shapes) and compares its detections with mmdet's predict."""
    from mmdet.structures import DetDataSample

    from mmvanilla.export_detectors import compare_detections, detections_of
    from mmvanilla.onnx_eval import paste_masks
    session = onnxruntime_session(path, threads=1)
    for x, shapes in inputs:
        outputs = session.run(None, {'input': x.numpy(), 'image_shape': shapes.numpy()})
        samples = [DetDataSample(metainfo=dict(img_shape=tuple(s), ori_shape=tuple(s), scale_factor=(1.0, 1.0)))
                   for s in shapes.tolist()]
        with torch.no_grad():
            expected = [s.pred_instances for s in model.predict(x, samples)]
        got = detections_of([torch.from_numpy(o) for o in outputs])
        want = [dict(boxes=p.bboxes, scores=p.scores, labels=p.labels) for p in expected]
        if masks:
            for dets, (height, width) in zip(got, shapes.tolist()):
                dets['masks'] = paste_masks(dets['masks'], dets['boxes'], height, width)
            for dets, p in zip(want, expected):
                dets['masks'] = p.masks
        comparison = compare_detections(want, got)
        assert comparison['first_disagreement'] is None and comparison['detections'] >= len(x) * 50


# Other batch sizes and input sizes than exported (down to feature maps of one pixel), images padded inside.
OTHER_INPUTS = ((torch.rand(3, 3, 96, 128) * 2 - 1, torch.tensor([[96, 128], [80, 100], [64, 128]])),
                (torch.rand(1, 3, 32, 64) * 2 - 1, torch.tensor([[30, 64]])))


@pytest.mark.slow
def test_retinanet_exports_end_to_end_and_onnxruntime_detects_what_mmdet_does_at_other_sizes(tmp_path):
    cfg = Config.fromfile(RETINANET)
    cfg.model.test_cfg.score_thr = 0.0  # random weights score low: let every box through, a hundred per image
    torch.manual_seed(0)
    model = build_model(cfg, deploy=True).eval()
    report = export_detector(model, tmp_path / 'det.onnx', input_shape=(1, 3, *SHAPE))
    assert [o['name'] for o in report['outputs']] == ['boxes', 'scores', 'labels', 'num_detections']
    assert report['outputs'][0]['shape'] == ['N', 100, 4] and report['inputs'][0]['shape'] == ['N', 3, 'H', 'W']
    assert report['comparison']['agreeing'] == 3 and report['comparison']['detections'] == 300  # 2 traced, 1 asked
    onnxruntime_matches_mmdet(model, tmp_path / 'det.onnx', OTHER_INPUTS)


@pytest.mark.slow
def test_mask_rcnn_exports_end_to_end_and_onnxruntime_detects_what_mmdet_does_at_other_sizes(tmp_path):
    torch.manual_seed(0)  # random weights: a hundred overlapping detections per image, masks of every class
    model = build_model(Config.fromfile(MASK_RCNN), deploy=True).eval()
    report = export_detector(model, tmp_path / 'det.onnx', input_shape=(2, 3, *SHAPE))
    assert [o['name'] for o in report['outputs']] == ['boxes', 'scores', 'labels', 'num_detections', 'masks']
    assert report['outputs'][-1]['shape'] == ['N', 100, 28, 28] and report['dynamic'] == ['batch', 'height', 'width']
    assert report['comparison']['agreeing'] == 4 and report['comparison']['detections'] > 0  # 2 traced, 2 asked
    onnxruntime_matches_mmdet(model, tmp_path / 'det.onnx', OTHER_INPUTS, masks=True)


@pytest.mark.slow
def test_a_detector_whose_post_processing_does_not_export_is_refused_before_exporting(checkpoints, tmp_path):
    cfg = Config.fromfile(RETINANET)
    cfg.model.test_cfg.nms = dict(type='soft_nms', iou_threshold=0.5)
    with pytest.raises(ValueError, match=r'RetinaNet cannot be exported end to end: test_cfg.nms=.*soft_nms.*What '
                                         r'exports end to end.*--part backbone'):
        export_checkpoint(cfg, str(checkpoints / 'train.pth'), str(tmp_path / 'x.onnx'), input_size=SHAPE)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r'--shape 48 64: a detector\'s input is padded to a multiple of 32.*'
                                         r'--shape 64 64'):
        export_checkpoint(Config.fromfile(RETINANET), str(checkpoints / 'train.pth'), str(tmp_path / 'x.onnx'),
                          input_size=(48, 64))
    assert not list(tmp_path.iterdir())
