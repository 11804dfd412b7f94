"""Spec of the synthetic COCO dataset: deterministic, exact annotations, readable by pycocotools and mmdet, safe."""
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmvanilla.datasets import CLASSES, generate_synthetic_coco, mask_to_polygons

# pycocotools' own numpy 2 deprecation notice, not ours.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
SMALL = dict(num_train=8, num_val=4, image_size=96, seed=0)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return generate_synthetic_coco(tmp_path_factory.mktemp('synthetic') / 'coco', **SMALL)


def read_files(root):
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob('*')) if path.is_file()}


def test_layout_and_summary(dataset):
    assert dataset['classes'] == CLASSES == ('circle', 'square', 'triangle', 'star')
    for split, num_images in (('train', 8), ('val', 4)):
        coco = json.loads(Path(dataset[split]['ann_file']).read_text())
        assert dataset[split]['num_images'] == len(coco['images']) == num_images
        assert dataset[split]['num_instances'] == len(coco['annotations']) >= num_images
        for image in coco['images']:
            pixels = cv2.imread(f"{dataset[split]['img_dir']}/{image['file_name']}")
            assert pixels.shape == (image['height'], image['width'], 3) == (96, 96, 3)


def test_same_arguments_give_byte_identical_files(dataset, tmp_path):
    generate_synthetic_coco(tmp_path / 'again', **SMALL)
    first = read_files(Path(dataset['root']))
    assert len(first) == 8 + 4 + 3  # the images, two annotation files and meta.json
    assert read_files(tmp_path / 'again') == first


def test_different_seed_gives_different_images(dataset, tmp_path):
    other = generate_synthetic_coco(tmp_path / 'other', **{**SMALL, 'seed': 1})
    for split in ('train', 'val'):
        for index in range(4):
            name = f'{index:06d}.png'
            assert not np.array_equal(cv2.imread(f"{dataset[split]['img_dir']}/{name}"),
                                      cv2.imread(f"{other[split]['img_dir']}/{name}"))


def test_train_and_val_share_no_image(dataset):
    train = [cv2.imread(f"{dataset['train']['img_dir']}/{i:06d}.png") for i in range(8)]
    for index in range(4):
        val = cv2.imread(f"{dataset['val']['img_dir']}/{index:06d}.png")
        assert not any(np.array_equal(val, image) for image in train)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_every_annotation_is_the_exact_visible_mask_of_a_known_class(dataset, split):
    coco = COCO(dataset[split]['ann_file'])
    assert [(cat['id'], cat['name']) for cat in coco.loadCats(coco.getCatIds())] == list(enumerate(CLASSES, 1))
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(annotations) <= 5
        for ann in annotations:
            mask = coco.annToMask(ann)
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann['area'] == mask.sum() > 0
            assert ann['category_id'] in range(1, len(CLASSES) + 1) and ann['iscrowd'] == 0
            assert all(len(polygon) >= 6 and len(polygon) % 2 == 0 for polygon in ann['segmentation'])
        # Shapes drawn later cover earlier ones: the visible masks never overlap.
        assert sum(coco.annToMask(ann).astype(int) for ann in annotations).max() == 1


def test_mmdet_reads_boxes_and_masks(dataset):
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    val = CocoDataset(ann_file=dataset['val']['ann_file'], data_prefix=dict(img=dataset['val']['img_dir']),
                      metainfo=dict(classes=CLASSES), pipeline=[], lazy_init=False)
    coco = COCO(dataset['val']['ann_file'])
    load = LoadAnnotations(with_bbox=True, with_label=True, with_mask=True, poly2mask=True)
    for index in range(len(val)):
        info = val.get_data_info(index)
        results = load({**info, 'ori_shape': (info['height'], info['width'])})
        anns = coco.loadAnns(coco.getAnnIds(imgIds=info['img_id']))
        np.testing.assert_array_equal(results['gt_masks'].masks, np.stack([coco.annToMask(ann) for ann in anns]))
        np.testing.assert_array_equal(results['gt_bboxes'].numpy(),
                                      [[x, y, x + w, y + h] for x, y, w, h in (ann['bbox'] for ann in anns)])
        assert list(results['gt_bboxes_labels']) == [ann['category_id'] - 1 for ann in anns]


def test_regenerating_with_the_same_arguments_is_a_no_op(dataset, tmp_path):
    root = tmp_path / 'coco'
    first = generate_synthetic_coco(root, **SMALL)
    stamps = {path: path.stat().st_mtime_ns for path in root.rglob('*')}
    assert generate_synthetic_coco(root, **SMALL) == first
    assert {path: path.stat().st_mtime_ns for path in root.rglob('*')} == stamps


def test_an_empty_root_is_filled(tmp_path):
    (tmp_path / 'coco').mkdir()
    assert generate_synthetic_coco(tmp_path / 'coco', num_train=1, num_val=1)['val']['num_images'] == 1
    assert [path.name for path in tmp_path.iterdir()] == ['coco']  # no temporary directory left behind


def test_other_arguments_on_an_existing_dataset_raise_and_keep_it(tmp_path):
    root = tmp_path / 'coco'
    generate_synthetic_coco(root, **SMALL)
    before = read_files(root)
    message = re.escape(f'{root} already holds a synthetic dataset made with other parameters: num_train=8 (asked 9);')
    with pytest.raises(FileExistsError, match=message + ' delete it or choose another root'):
        generate_synthetic_coco(root, **{**SMALL, 'num_train': 9})
    assert read_files(root) == before


def test_a_root_holding_other_files_is_never_overwritten(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match=re.escape(f'{tmp_path} already holds other files')):
        generate_synthetic_coco(tmp_path, num_train=1, num_val=1)
    assert [path.name for path in tmp_path.iterdir()] == ['notes.txt']


@pytest.mark.parametrize('bad', [dict(num_train=-1), dict(num_val=1.5), dict(image_size=16), dict(seed=-3)])
def test_bad_arguments_raise(tmp_path, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f'{name} must be an integer'):
        generate_synthetic_coco(tmp_path / 'coco', **bad)


def test_mask_to_polygons_round_trips_through_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = np.zeros((40, 40), np.uint8)
        for _ in range(2):  # possibly two disjoint parts
            cv2.fillPoly(mask, [rng.integers(0, 40, (5, 2), dtype=np.int32)], 1)
        polygons = mask_to_polygons(mask)
        if polygons is not None:
            decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 40, 40)))
            np.testing.assert_array_equal(decoded, mask)
    ring = cv2.circle(np.zeros((20, 20), np.uint8), (10, 10), 6, 1, thickness=2)
    assert mask_to_polygons(ring) is None  # a hole cannot be a COCO polygon
