"""An end-to-end ONNX detector evaluated with onnxruntime (mmvanilla/onnx_eval.py, tools/test_onnx.py)."""
import json

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config

from mmvanilla.onnx_eval import OnnxDetector, evaluate_onnx, format_evaluation

from .conftest import RETINANET, ROOT, run_tool

MASK_RCNN = str(ROOT / 'configs/mask_rcnn_vanillanet_tiny_synthetic.py')


def stub_detector(path, masks: bool = False, label: int = 2):
    """An ONNX file with the end-to-end contract that detects, for one image, two fixed boxes (one padding row)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    values = dict(boxes=np.array([[[10, 20, 30, 40], [0, 0, 8, 8], [0, 0, 0, 0]]], np.float32),
                  scores=np.array([[0.9, 0.6, 0.0]], np.float32), labels=np.array([[label, 0, -1]], np.int64),
                  num_detections=np.array([2], np.int64))
    if masks:
        values['masks'] = np.zeros((1, 3, 28, 28), np.float32)
        values['masks'][0, 0, 7:21, 7:21] = 1  # the middle of the first box
    nodes = [helper.make_node('Constant', [], [name], value=numpy_helper.from_array(v, name)) for name, v in
             values.items()]
    inputs = [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['N', 3, 'H', 'W']),
              helper.make_tensor_value_info('image_shape', TensorProto.INT64, ['N', 2])]
    outputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
               for name, v in values.items()]
    model = helper.make_model(helper.make_graph(nodes, 'stub', inputs, outputs),
                              opset_imports=[helper.make_opsetid('', 18)])
    onnx.save(model, str(path))
    return str(path)


def test_predictions_are_rescaled_to_the_original_image_and_masks_pasted_into_it(tmp_path):
    detector = OnnxDetector(stub_detector(tmp_path / 'stub.onnx', masks=True), threads=1)
    sample = DetDataSample(metainfo=dict(img_shape=(64, 80), ori_shape=(128, 160), scale_factor=(0.5, 0.5)))
    (sample,) = detector.predict(torch.zeros(1, 3, 64, 96), [sample])
    predicted = sample.pred_instances
    assert predicted.bboxes.tolist() == [[20, 40, 60, 80], [0, 0, 16, 16]]  # padding row dropped
    assert predicted.scores.tolist() == pytest.approx([0.9, 0.6]) and predicted.labels.tolist() == [2, 0]
    assert predicted.masks.shape == (2, 128, 160) and predicted.masks.dtype == torch.bool
    assert predicted.masks[0, 50:70, 30:50].all() and not predicted.masks[0, :40].any()
    assert not predicted.masks[1].any()


def tiny_split(tmp_path) -> Config:
    """The tiny RetinaNet config on a fresh synthetic set of one validation image, read in the test process."""
    from mmvanilla.datasets import generate_synthetic_coco
    root = tmp_path / 'data'
    generate_synthetic_coco(root, num_train=1, num_val=1, seed=3)
    cfg = Config.fromfile(RETINANET)
    cfg.test_dataloader.update(batch_size=1, num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.data_root = f'{root}/'
    cfg.test_evaluator.ann_file = f'{root}/annotations/instances_val.json'
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


def test_a_split_is_scored_with_the_configs_metric_and_a_foreign_file_is_named(tmp_path):
    cfg = tiny_split(tmp_path)
    result = evaluate_onnx(cfg, stub_detector(tmp_path / 'stub.onnx'), threads=1)
    assert result['images'] == 1 and result['agreement'] is None and list(result['backends']) == ['onnxruntime']
    metrics = result['backends']['onnxruntime']
    assert 0 <= metrics['coco/bbox_mAP'] <= 1 and metrics['ms_per_image'] > 0
    assert '| onnxruntime |' in format_evaluation(result)
    with pytest.raises(ValueError, match='seven.onnx detects class 7, but the config\'s test split has 4 classes'):
        evaluate_onnx(cfg, stub_detector(tmp_path / 'seven.onnx', label=7), threads=1)


def test_files_that_are_not_end_to_end_detectors_are_refused_with_the_fix(tmp_path):
    cfg = Config.fromfile(MASK_RCNN)
    with pytest.raises(FileNotFoundError, match='ONNX file .*nope.onnx not found: export it with tools/export_onnx.py'):
        evaluate_onnx(cfg, str(tmp_path / 'nope.onnx'))
    (tmp_path / 'junk.onnx').write_text('not a graph')
    with pytest.raises(ValueError, match='junk.onnx is not an ONNX file onnxruntime can load'):
        evaluate_onnx(cfg, str(tmp_path / 'junk.onnx'))
    from mmvanilla.export import export_onnx
    export_onnx(torch.nn.Conv2d(3, 4, 1), tmp_path / 'conv.onnx', input_shape=(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r'conv.onnx is not an end-to-end detector \(inputs \[\'input\'\].*--part '
                                         r'detector'):
        evaluate_onnx(cfg, str(tmp_path / 'conv.onnx'))
    with pytest.raises(ValueError, match='boxes.onnx gives no masks, but the config\'s test_evaluator asks for segm'):
        evaluate_onnx(cfg, stub_detector(tmp_path / 'boxes.onnx'))
    (tmp_path / 'metrics.json').write_text('{}')
    with pytest.raises(ValueError, match='metrics.json exists: pass --force'):
        evaluate_onnx(cfg, stub_detector(tmp_path / 'masks.onnx', masks=True),
                      metrics_out=str(tmp_path / 'metrics.json'))
    assert (tmp_path / 'metrics.json').read_text() == '{}'


@pytest.mark.slow
def test_the_tool_says_what_is_wrong_in_one_line(tmp_path):
    proc = run_tool('test_onnx.py', RETINANET, 'missing.onnx', cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('error: ONNX file missing.onnx not found')
    proc = run_tool('test_onnx.py', RETINANET, stub_detector(tmp_path / 'stub.onnx'), '--threads', '0', cwd=tmp_path)
    assert proc.returncode == 2 and 'error: --threads 0: give a positive number' in proc.stderr


@pytest.mark.slow
def test_the_exported_retinanet_scores_what_pytorch_scores_and_detects_the_same_boxes(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    onnx_file = str(tmp_path / 'retinanet.onnx')
    # Two epochs on 16 images score below the config's 0.05: a lower threshold gives detections to compare.
    threshold = ['--cfg-options', 'model.test_cfg.score_thr=0.01']
    proc = run_tool('export_onnx.py', run['config'], str(run['trained']), '--out', onnx_file, '--shape', '128', '128',
                    *threshold, cwd=run['cwd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'output boxes: [\'N\', 100, 4]' in proc.stdout and 'dynamic: batch, height, width' in proc.stdout
    proc = run_tool('test_onnx.py', run['config'], onnx_file, '--checkpoint', str(run['trained']), '--threads', '1',
                    '--work-dir', str(tmp_path / 'eval'), '--metrics-out', str(tmp_path / 'metrics.json'),
                    *threshold, cwd=run['cwd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / 'metrics.json').read_text())
    agreement = result['agreement']
    assert agreement['images'] == agreement['agreeing'] == 8 and agreement['detections'] > 0
    assert agreement['first_disagreement'] is None
    onnx_metrics, torch_metrics = result['backends']['onnxruntime'], result['backends']['pytorch']
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert abs(onnx_metrics[key] - torch_metrics[key]) <= 0.002
    assert format_evaluation(result) in proc.stdout
