"""A small, deterministic image-classification set in ImageNet's folder layout: one shape per image.

ImageNet cannot be fetched everywhere this project runs, so the classification configs also train and evaluate on
images made here, with the shapes and textures of :mod:`mmvanilla.datasets.synthetic_coco`: each image shows one
circle, square, triangle or star (its class) of random size (35% to 85% of the side), rotation and colour, on a
textured background, saved as JPEG.

Layout under ``root`` (as ``data/imagenet``)::

    train/circle/000000.JPEG ...  train/square/ ...  val/circle/000000.JPEG ...
    meta.json             the generation parameters

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp() + '/synthetic_imagenet'  # data/synthetic_imagenet for the main job's config
    >>> summary = generate_synthetic_image_folder(root, num_train=8, num_val=4)
    >>> summary['classes'], summary['train']['num_images']
    (('circle', 'square', 'triangle', 'star'), 32)
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .synthetic_coco import (CLASSES, _background, _camera, _contrasting_colour, _shape_mask, check_integers,
                             write_once)

_FORMAT_VERSION = 1
_SIZE_RANGE = (0.35, 0.85)  # shape diameter over image side
_JPEG_QUALITY = 95


def generate_synthetic_image_folder(root: str | os.PathLike, num_train: int = 300, num_val: int = 100,
                                    image_size: int = 64, seed: int = 0) -> dict:
    """Writes the dataset under ``root`` once; later calls with the same arguments only return its summary.

    Image ``i`` of class ``c`` in a split comes from ``numpy.random.default_rng([seed, split, c, i])`` (split 0 is
    train, 1 is val), so the same arguments give identical files and train and val never share an image.

    Args:
        root (str | PathLike): Output directory; it must not exist, be empty, or hold this same dataset.
        num_train (int): Training images per class. Defaults to 300.
        num_val (int): Validation images per class. Defaults to 100.
        image_size (int): Side of the square images in pixels. Defaults to 64.
        seed (int): Non-negative random seed. Defaults to 0.

    Returns:
        dict: ``root``, ``classes`` and, for ``'train'`` and ``'val'``, the ``img_dir`` and ``num_images``.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``root`` holds other files or a dataset made with other arguments.
    """
    check_integers(num_train=(num_train, 1), num_val=(num_val, 1), image_size=(image_size, 16), seed=(seed, 0))
    root = Path(root)
    meta = dict(generator='mmvanilla.datasets.synthetic_image_folder', format_version=_FORMAT_VERSION,
                classes=list(CLASSES), num_train=int(num_train), num_val=int(num_val), image_size=int(image_size),
                seed=int(seed))

    def write(out: Path) -> None:
        for split_id, (split, num) in enumerate((('train', num_train), ('val', num_val))):
            for label, name in enumerate(CLASSES):
                folder = out / split / name
                folder.mkdir(parents=True)
                for index in range(num):
                    image = render_image(np.random.default_rng([seed, split_id, label, index]), label, image_size)
                    path = folder / f'{index:06d}.JPEG'
                    if not cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
                        raise OSError(f'could not write {path}')

    write_once(root, meta, write)
    return dict(root=str(root), classes=CLASSES,
                **{split: dict(img_dir=str(root / split), num_images=num * len(CLASSES))
                   for split, num in (('train', num_train), ('val', num_val))})


def render_image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One ``(size, size, 3)`` RGB uint8 image of shape ``CLASSES[label]`` on a textured background."""
    canvas = _background(rng, size)
    mask = _shape_mask(rng, label, size, _SIZE_RANGE)
    canvas[mask] = _contrasting_colour(rng, canvas[mask])
    return _camera(rng, canvas)
