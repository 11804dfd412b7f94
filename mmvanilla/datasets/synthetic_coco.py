"""A small, deterministic, COCO-format dataset of shapes for detection and instance segmentation.

Real COCO cannot be fetched everywhere this project runs, so the detection configs train and evaluate on images made
here: 1 to 5 shapes per image, whose class is the shape alone (the colour is random), with random size (about 11% to
44% of the image side), rotation and colour, drawn over textured backgrounds (gradients, stripes, checkers, smooth
noise). Later shapes may cover earlier ones; a placement is retried when it would leave an earlier shape less than
half visible or cut a hole in it, so every drawn shape is annotated and its mask is a set of hole-free polygons.
Each annotation describes the visible pixels exactly: the polygons decode (pycocotools) to the visible mask, the box
is its tight box and the area its pixel count.

Layout under ``root``::

    train/000000.png ...  val/000000.png ...
    annotations/instances_train.json  annotations/instances_val.json
    meta.json             the generation parameters

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp() + '/synthetic_coco'  # data/synthetic_coco for the main job's configs
    >>> summary = generate_synthetic_coco(root, num_train=8, num_val=4)
    >>> summary['train']['num_images'], summary['classes']
    (8, ('circle', 'square', 'triangle', 'star'))
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

# Each class is a star polygon: (number of points, inner radius relative to the outer one; None for a convex polygon).
_SHAPES = {'circle': (64, None), 'square': (4, None), 'triangle': (3, None), 'star': (5, 0.45)}
CLASSES = tuple(_SHAPES)

_FORMAT_VERSION = 1
_MAX_OBJECTS = 5
_SIZE_RANGE = (0.11, 0.44)  # shape diameter over image side: 14..56 px at 128
_MIN_VISIBLE = 0.5  # the part of a shape that must stay uncovered by later shapes
_MIN_CONTRAST = 90.0  # RGB distance between a shape and nearly all pixels it covers
_PLACEMENT_TRIES = 20


def generate_synthetic_coco(root: str | os.PathLike, num_train: int = 600, num_val: int = 150,
                            image_size: int = 128, seed: int = 0) -> dict:
    """Writes the dataset under ``root`` once; later calls with the same arguments only return its summary.

    Image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split, i])`` (split 0 is train, 1 is val),
    so the same arguments give byte-identical files and train and val never share an image. The files are written to
    a temporary directory next to ``root`` and renamed into place, so ``root`` never holds a partial dataset.

    Args:
        root (str | PathLike): Output directory; it must not exist, be empty, or hold this same dataset.
        num_train (int): Number of training images. Defaults to 600.
        num_val (int): Number of validation images. Defaults to 150.
        image_size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Non-negative random seed. Defaults to 0.

    Returns:
        dict: ``root``, ``classes`` and, for ``'train'`` and ``'val'``, the ``img_dir``, ``ann_file``, ``num_images``
        and ``num_instances``.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``root`` holds other files or a dataset made with other arguments.
    """
    check_integers(num_train=(num_train, 1), num_val=(num_val, 1), image_size=(image_size, 32), seed=(seed, 0))
    root = Path(root)
    meta = dict(generator='mmvanilla.datasets.synthetic_coco', format_version=_FORMAT_VERSION, classes=list(CLASSES),
                num_train=int(num_train), num_val=int(num_val), image_size=int(image_size), seed=int(seed))
    def write(out: Path) -> None:
        for split_id, (split, num) in enumerate((('train', num_train), ('val', num_val))):
            _write_split(out, split, split_id, num, image_size, seed)

    write_once(root, meta, write)
    return _summary(root)


def check_integers(**values: tuple) -> None:
    """Raises ValueError unless every ``name=(value, low)`` has an integer ``value >= low``."""
    for name, (value, low) in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')


def write_once(root: Path, meta: dict, write) -> None:
    """Makes ``root`` with ``write(tmp_dir)`` and a ``meta.json`` of ``meta``, unless it already holds that dataset.

    The files are written to a temporary directory next to ``root`` and renamed into place, so ``root`` never holds
    a partial dataset.
    """
    if _holds_dataset(root, meta):
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private
        write(tmp)
        (tmp / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
        try:
            tmp.rename(root)  # atomic; replaces only a missing or empty root
        except OSError:
            if not _holds_dataset(root, meta):  # not another process having just written the same dataset
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _holds_dataset(root: Path, meta: dict) -> bool:
    """True if ``root`` holds the dataset ``meta`` describes, False if it is missing or empty; raises otherwise."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    try:
        found = json.loads((root / 'meta.json').read_text())
    except (OSError, ValueError):
        found = None
    if found == meta:
        return True
    if isinstance(found, dict):
        what = 'a synthetic dataset made with other parameters: ' + ', '.join(
            f'{key}={found.get(key)!r} (asked {value!r})' for key, value in meta.items() if found.get(key) != value)
    else:
        what = 'other files'
    raise FileExistsError(f'{root} already holds {what}; delete it or choose another root')


def _summary(root: Path) -> dict:
    summary = dict(root=str(root), classes=CLASSES)
    for split in ('train', 'val'):
        ann_file = root / 'annotations' / f'instances_{split}.json'
        coco = json.loads(ann_file.read_text())
        summary[split] = dict(img_dir=str(root / split), ann_file=str(ann_file), num_images=len(coco['images']),
                              num_instances=len(coco['annotations']))
    return summary


def _write_split(out: Path, split: str, split_id: int, num_images: int, size: int, seed: int) -> None:
    (out / split).mkdir()
    (out / 'annotations').mkdir(exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image, instances = _render_image(np.random.default_rng([seed, split_id, index]), size)
        file_name = f'{index:06d}.png'
        if not cv2.imwrite(str(out / split / file_name), image[..., ::-1]):  # RGB to OpenCV's BGR
            raise OSError(f'could not write {out / split / file_name}')
        images.append(dict(id=index + 1, file_name=file_name, width=size, height=size))
        for label, mask in instances:
            ys, xs = np.nonzero(mask)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index + 1, category_id=label + 1, iscrowd=0,
                bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                area=int(mask.sum()), segmentation=mask_to_polygons(mask)))
    coco = dict(
        info=dict(description=f'mmvanilla synthetic shapes, {split} split', version=str(_FORMAT_VERSION)),
        licenses=[], images=images, annotations=annotations,
        categories=[dict(id=label + 1, name=name, supercategory='shape') for label, name in enumerate(CLASSES)])
    (out / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco, separators=(',', ':')))


def mask_to_polygons(mask: np.ndarray) -> list[list[int]] | None:
    """Traces a binary mask into COCO polygons that pycocotools decodes back to exactly the same mask.

    The vertices lie on pixel corners (pixel ``(x, y)`` spans ``[x, x + 1] x [y, y + 1]``): the outline is traced at
    twice the resolution, where each contour point sits a quarter pixel inside a corner, and rounded to that corner.

    Args:
        mask (np.ndarray): ``(H, W)`` array, non-zero inside.

    Returns:
        list[list[int]] | None: One flat ``[x0, y0, x1, y1, ...]`` list per connected part, or None if the mask has a
        hole, which COCO polygons cannot express.
    """
    upsampled = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(upsampled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is not None and (hierarchy[0][:, 3] >= 0).any():
        return None
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2) + 1) // 2
        points = points[(points != np.roll(points, 1, axis=0)).any(axis=1)]
        before, after = np.roll(points, 1, axis=0) - points, np.roll(points, -1, axis=0) - points
        points = points[before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]]  # drop points on straight runs
        polygons.append(points.reshape(-1).tolist())
    return polygons


def _render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draws one image; returns it as ``(size, size, 3)`` RGB uint8 and ``(label, visible mask)`` per shape."""
    canvas = _background(rng, size)
    owner = np.full((size, size), -1, np.int16)  # index of the shape seen at each pixel
    labels, areas = [], []
    for _ in range(rng.integers(1, _MAX_OBJECTS + 1)):
        label = int(rng.integers(len(CLASSES)))
        for _ in range(_PLACEMENT_TRIES):
            mask = _shape_mask(rng, label, size)
            covered = np.unique(owner[mask])
            trial = np.where(mask, len(labels), owner)
            if all((trial == j).sum() >= _MIN_VISIBLE * areas[j] and mask_to_polygons(trial == j) is not None
                   for j in covered[covered >= 0]):
                break
        else:
            continue  # no room for this shape
        canvas[mask] = _contrasting_colour(rng, canvas[mask])
        owner = trial
        labels.append(label)
        areas.append(int(mask.sum()))
    return _camera(rng, canvas), [(label, owner == j) for j, label in enumerate(labels)]


def _camera(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """The drawn float canvas as a photo: slightly blurred (softer aliased edges), noisy, uint8."""
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.6)
    canvas += rng.normal(0, rng.uniform(2, 8), canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 255).round().astype(np.uint8)


def _shape_mask(rng: np.random.Generator, label: int, size: int,
                size_range: tuple[float, float] = _SIZE_RANGE) -> np.ndarray:
    points, inner = _SHAPES[CLASSES[label]]
    radius = rng.uniform(*size_range) * size / 2
    center = rng.uniform(radius, size - radius, 2)
    corners = points if inner is None else 2 * points
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(corners) / corners
    radii = radius * np.where(np.arange(corners) % 2, inner or 1.0, 1.0)[:, None]
    vertices = center + radii * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    mask = np.zeros((size, size), np.uint8)
    # Sub-pixel vertices (4 fractional bits); cv2 pixel centres sit on integer coordinates, ours at +0.5.
    cv2.fillPoly(mask, [np.round((vertices - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _contrasting_colour(rng: np.random.Generator, beneath: np.ndarray) -> np.ndarray:
    """A random colour far from nearly all of the ``(N, 3)`` pixels it will cover (the best of a few tries)."""
    best, best_distance = None, -1.0
    for _ in range(_PLACEMENT_TRIES):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        distance = np.percentile(np.linalg.norm(beneath - colour, axis=1), 5)
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= _MIN_CONTRAST:
            break
    return best


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` float32 texture blending two nearby colours by a gradient, stripes, checker or noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, np.pi)
    u, v = x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)
    frequency = rng.uniform(3, 12)  # periods per image side
    kind = rng.integers(4)
    if kind == 0:
        weight = (u - u.min()) / (u.max() - u.min())
    elif kind == 1:
        weight = (np.sin(2 * np.pi * frequency * u + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    elif kind == 2:
        weight = ((np.floor(frequency * u) + np.floor(frequency * v)) % 2).astype(np.float32)
    else:
        cells = int(rng.integers(2, 17))
        weight = cv2.resize(rng.random((cells, cells), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    first = rng.uniform(0, 255, 3)
    second = np.clip(first + rng.normal(0, 50, 3), 0, 255)
    return (first + np.clip(weight, 0, 1)[..., None] * (second - first)).astype(np.float32)
