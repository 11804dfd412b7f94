"""The synthetic image-folder set and ImageFolderDataset (mmvanilla/datasets)."""
import hashlib

import pytest
import torch
from mmdet.registry import DATASETS
from mmengine.dataset import default_collate

from mmvanilla.datasets import CLASSES, ImageFolderDataset, generate_synthetic_image_folder


def digest(root):
    files = sorted(p for p in root.rglob('*') if p.is_file())
    return hashlib.sha256(b''.join(str(p.relative_to(root)).encode() + p.read_bytes() for p in files)).hexdigest()


def test_layout_is_imagenets_one_folder_per_class(tmp_path):
    summary = generate_synthetic_image_folder(tmp_path / 'shapes', num_train=3, num_val=2, image_size=32)
    assert summary['classes'] == CLASSES
    assert summary['train']['num_images'] == 12 and summary['val']['num_images'] == 8
    for split, num in (('train', 3), ('val', 2)):
        for name in CLASSES:
            assert len(list((tmp_path / 'shapes' / split / name).glob('*.JPEG'))) == num


def test_generation_is_deterministic_and_idempotent(tmp_path):
    generate_synthetic_image_folder(tmp_path / 'a', num_train=2, num_val=1, image_size=32, seed=3)
    generate_synthetic_image_folder(tmp_path / 'b', num_train=2, num_val=1, image_size=32, seed=3)
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    generate_synthetic_image_folder(tmp_path / 'a', num_train=2, num_val=1, image_size=32, seed=3)  # no-op
    with pytest.raises(FileExistsError, match='num_train=2'):
        generate_synthetic_image_folder(tmp_path / 'a', num_train=4, num_val=1, image_size=32, seed=3)


@pytest.mark.parametrize('kwargs', [dict(num_train=0), dict(image_size=8), dict(seed=-1), dict(num_val=True)])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_synthetic_image_folder(tmp_path / 'x', **kwargs)


def test_dataset_gives_transformed_images_and_class_indices_that_collate_into_a_batch(tmp_path):
    generate_synthetic_image_folder(tmp_path / 'shapes', num_train=2, num_val=1, image_size=32)
    dataset = DATASETS.build(dict(type='ImageFolderDataset', data_root=str(tmp_path / 'shapes'), data_prefix='train',
                                  transform=dict(is_training=True, input_size=24, auto_augment='rand-m7-mstd0.5-inc1')))
    assert len(dataset) == 8
    assert dataset.metainfo['classes'] == tuple(sorted(CLASSES))  # sorted folder names, as torchvision and timm
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    assert batch['inputs'].shape == (8, 3, 24, 24) and batch['inputs'].dtype == torch.float32
    assert batch['data_samples'].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_missing_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'nowhere/train not found.*data_root=PATH'):
        ImageFolderDataset(str(tmp_path / 'nowhere'), 'train')
