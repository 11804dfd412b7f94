"""What a run checks of its data before it starts (mmvanilla/data_checks.py), in-process and fast."""
import json
import os

import pytest
from mmengine.config import Config

from mmvanilla.data_checks import check_data, invalid_boxes

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


def test_boxes_of_other_classes_or_images_are_reported_as_mmdet_leaves_them_out(tmp_path):
    data = coco(tmp_path, annotations=[(10, 10, 20, 20), (30, 30, 20, 20), (50, 10, 20, 20)])
    data['annotations'][1]['category_id'] = 7
    data['annotations'][2]['image_id'] = 99
    (tmp_path / 'annotations/instances_val.json').write_text(json.dumps(data))
    warnings = check_data(config_for(tmp_path), ('test',))
    ann = f'test annotation file {tmp_path}/annotations/instances_val.json'
    assert warnings == [
        f"{ann}: 1 of its 3 boxes have a category that is not among the config's classes (category ids 7; the classes "
        "are ids 1): left out, as mmdet's CocoDataset leaves them out. Add their classes to the config, or remove them "
        'from the file to silence this',
        f'{ann}: 1 of its 3 boxes belong to image ids that are not among its images (e.g. 99): left out. Fix the '
        'image_id or remove them']


def test_an_image_id_used_twice_is_refused(tmp_path):
    data = coco(tmp_path, images=3, annotations=[(10, 10, 20, 20)])
    data['images'][2]['id'] = 1
    (tmp_path / 'annotations/instances_val.json').write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r'1 image ids are used by more than one image \(e.g. id 1: 1.png, 2.png\)'):
        check_data(config_for(tmp_path), ('test',))
