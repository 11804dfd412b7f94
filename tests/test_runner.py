"""What tools/train.py and tools/test.py check before a run (mmvanilla/runner.py), in-process and fast."""
import json
import os
import time

import pytest
import torch
from mmengine.config import Config

from mmvanilla.runner import (check_data, check_model_config, check_pretrained, find_resume_checkpoint, invalid_boxes,
                              load_config)

from .conftest import RETINANET


def coco(tmp_path, images=2, annotations=()):
    """A COCO-format split in ``tmp_path``: ``images`` 100x80 images (written) and the given annotations."""
    (tmp_path / 'val').mkdir(exist_ok=True)
    (tmp_path / 'annotations').mkdir(exist_ok=True)
    for i in range(images):
        (tmp_path / 'val' / f'{i}.png').write_bytes(b'png')
    data = dict(images=[dict(id=i, file_name=f'{i}.png', width=100, height=80) for i in range(images)],
                annotations=[dict(id=j, image_id=0, category_id=1, bbox=list(b), area=b[2] * b[3], iscrowd=0)
                             for j, b in enumerate(annotations)],
                categories=[dict(id=1, name='circle')])
    (tmp_path / 'annotations/instances_val.json').write_text(json.dumps(data))
    return data


def config_for(tmp_path) -> Config:
    cfg = Config.fromfile(RETINANET)
    root = f'{tmp_path}/'
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root
    cfg.test_evaluator.ann_file = cfg.val_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


def test_invalid_boxes_are_those_mmdet_leaves_out_of_training(tmp_path):
    data = coco(tmp_path, annotations=[(10, 10, 20, 20), (10, 10, 0, 5), (10, 10, 5, -3), (150, 10, 5, 5),
                                       (95, 75, 20, 20)])  # the last is partly outside: kept, as by mmdet
    assert invalid_boxes(data) == {'non-positive size': [1, 2], 'outside the image': [3]}


def test_invalid_boxes_are_reported_and_left_out_of_evaluation_too(tmp_path):
    coco(tmp_path, annotations=[(10, 10, 20, 20), (10, 10, 0, 5), (150, 10, 5, 5)])
    cfg = config_for(tmp_path)
    (warning,) = check_data(cfg, ('test',))
    assert warning.startswith(f'test annotation file {tmp_path}/annotations/instances_val.json: 2 of its 3 boxes are '
                              'invalid (1 with non-positive size, 1 outside the image): left out of training')
    evaluated = json.loads(open(cfg.test_evaluator.ann_file).read())
    assert cfg.test_evaluator.ann_file.startswith(cfg.work_dir)
    assert [a['bbox'] for a in evaluated['annotations']] == [[10, 10, 20, 20]]


def test_annotations_that_cannot_be_used_are_refused_naming_file_split_and_fix(tmp_path):
    cfg = config_for(tmp_path)
    coco(tmp_path, images=0)
    with pytest.raises(ValueError, match=r'test annotation file .*instances_val.json lists no images: the test split '
                                         r'is empty'):
        check_data(cfg, ('test',))
    coco(tmp_path, images=3)
    os.remove(tmp_path / 'val/1.png')
    with pytest.raises(FileNotFoundError, match=r'test split: 1 of the 3 images listed in .*instances_val.json are '
                                                r'missing from .*val/ \(e.g. 1.png\): put them there'):
        check_data(cfg, ('test',))
    (tmp_path / 'annotations/instances_val.json').write_text('{"images": [1, 2 3]}')
    with pytest.raises(ValueError, match=r'test annotation file .*instances_val.json is not valid JSON \(Expecting '
                                         r"',' delimiter at line 1, column \d+\): repair or regenerate it"):
        check_data(cfg, ('test',))


def test_a_backbone_norm_that_cannot_be_folded_is_refused_by_its_setting():
    cfg = Config.fromfile(RETINANET)
    cfg.model.backbone.norm_cfg = dict(type='GN', num_groups=4)
    with pytest.raises(ValueError, match=r"model.backbone.norm_cfg.type='GN': VanillaNet folds its norms into "
                                         r"convolutions, so norm_cfg must be a BatchNorm type; set "
                                         r"model.backbone.norm_cfg.type='BN'"):
        check_model_config(cfg)
    cfg.model.backbone.norm_cfg = dict(type='SyncBN')
    check_model_config(cfg)


def test_a_config_with_a_syntax_error_is_named_with_its_line(tmp_path):
    (tmp_path / 'broken.py').write_text("model = dict(\n    type='RetinaNet',\n    backbone=dict(type='VanillaNet'\n")
    with pytest.raises(ValueError, match=r'config file .*broken.py, line \d+: .*; fix the Python syntax there'):
        load_config(str(tmp_path / 'broken.py'))


def save(path, epoch, complete=True):
    torch.save({'meta': {'epoch': epoch}, 'state_dict': {'w': torch.ones(100)}}, path)
    if not complete:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    time.sleep(0.01)  # distinct modification times


def test_resume_takes_the_newest_complete_checkpoint_whatever_last_checkpoint_says(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) == (None, [])
    save(tmp_path / 'epoch_1.pth', 1)
    assert find_resume_checkpoint(str(tmp_path)) == (str(tmp_path / 'epoch_1.pth'), [])  # no last_checkpoint
    save(tmp_path / 'epoch_2.pth', 2)
    save(tmp_path / 'epoch_10.pth', 10, complete=False)  # cut short: never taken for a whole one
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))  # stale
    (tmp_path / 'best_coco_bbox_mAP_epoch_2.pth').write_bytes(b'')  # not a checkpoint to resume from
    assert find_resume_checkpoint(str(tmp_path)) == (str(tmp_path / 'epoch_2.pth'), [str(tmp_path / 'epoch_10.pth')])


def test_pretrained_weights_are_read_before_training(tmp_path):
    cfg = Config.fromfile(RETINANET)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'vanillanet_5.pth'))
    with pytest.raises(FileNotFoundError, match='vanillanet_5.pth not found'):
        check_pretrained(cfg)
    (tmp_path / 'vanillanet_5.pth').write_bytes(b'')
    with pytest.raises(ValueError, match=r'vanillanet_5.pth is empty \(0 bytes\)'):
        check_pretrained(cfg)
    torch.save({'model': {'stem1.0.weight': torch.ones(1)}}, tmp_path / 'vanillanet_5.pth')
    check_pretrained(cfg)
