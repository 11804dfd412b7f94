"""What a run checks of its data before it starts, each refusal one line that names the file, the cause and the fix.

:func:`check_data` refuses what mmdet would fail on late or use wrongly (missing files and images, JSON that is not
COCO, repeated ids, splits without images or boxes, polygons that cannot be masks) and reports what mmdet leaves out
(invalid boxes, boxes of other classes or images), leaving invalid boxes out of the evaluation's ground truth too.
:func:`check_show_dir` keeps the drawings of ``tools/test.py --show-dir`` off the data and off existing files.
"""
from __future__ import annotations

import json
import os
import os.path as osp

from mmengine.config import Config
from mmengine.logging import MMLogger

from .outputs import atomic_output

__all__ = ['check_data', 'check_show_dir', 'invalid_boxes', 'valid_annotations']


def _datasets(cfg: Config, splits: tuple[str, ...]):
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        dataset = loader['dataset']
        # Wrappers (RepeatDataset, ConcatDataset ...) hold the real dataset(s) inside.
        stack = [dataset]
        while stack:
            ds = stack.pop()
            if 'dataset' in ds:
                stack.append(ds['dataset'])
            elif 'datasets' in ds:
                stack.extend(ds['datasets'])
            else:
                yield split, ds


def check_data(cfg: Config, splits: tuple[str, ...]) -> list[str]:
    """Fails early, with one clear message, on data the run cannot use; reports invalid ground truth.

    Refuses a missing annotation file or image folder, an annotation file that is not valid JSON, a split without
    images, and images the annotations list but the folder lacks; and, in COCO files, what
    :func:`_check_coco_content` refuses (repeated ids, no annotations, no class of the config, polygons of fewer than
    three points), reporting the boxes mmdet leaves out (of other classes or images). Boxes of non-positive width
    or height, or wholly
    outside their image, are counted and reported per file; mmdet's ``CocoDataset`` leaves them out of training, and
    for evaluation (the COCO API reads the annotation file itself) they are left out too, through a copy of the
    file without them in the work dir (see :func:`valid_annotations`).

    Returns:
        list[str]: The warnings, also logged.
    """
    warnings = []
    for split, ds in _datasets(cfg, splits):
        root = ds.get('data_root') or ''
        ann = ds.get('ann_file')
        if ann:
            path = osp.join(root, ann)
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'{split} annotation file {path} not found (data_root={root!r}, ann_file={ann!r}). Put the '
                    f'dataset there (COCO: data/coco/annotations/instances_*2017.json, data/coco/*2017/), or point '
                    f'the config at it with --cfg-options {split}_dataloader.dataset.data_root=PATH')
        prefix = ds.get('data_prefix')
        # mmdet datasets: data_prefix=dict(img=...); ImageFolderDataset: data_prefix='train' (<class>/* below it).
        if isinstance(prefix, str):
            key, img_dir = 'data_prefix', prefix
        else:
            key, img_dir = 'data_prefix.img', (prefix or {}).get('img')
        if img_dir is not None and not osp.isdir(osp.join(root, img_dir)):
            raise FileNotFoundError(
                f'{split} image folder {osp.join(root, img_dir)} not found (data_root={root!r}, '
                f'{key}={img_dir!r}); put the images there (ImageNet: data/imagenet/{{train,val}}/<class>/*.JPEG), '
                f'or fix the path with --cfg-options {split}_dataloader.dataset.data_root=PATH')
        if ann and str(ann).endswith('.json'):
            for warning in _check_coco_annotations(cfg, split, ds, osp.join(root, ann),
                                                   osp.join(root, img_dir or '')):
                MMLogger.get_current_instance().warning(warning)
                warnings.append(warning)
    return warnings


def _read_json(path: str, split: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{split} annotation file {path} is not valid JSON ({e.msg} at line {e.lineno}, column '
                         f'{e.colno}): repair or regenerate it') from None
    except UnicodeDecodeError as e:
        raise ValueError(f'{split} annotation file {path} is not a text (JSON) file ({e.reason} at byte '
                         f'{e.start}): give the COCO-format .json file') from None


def invalid_boxes(coco: dict) -> dict[str, list[int]]:
    """Indices into ``coco['annotations']`` of boxes that cannot be ground truth, by cause:
    ``'non-positive size'`` (width or height <= 0) and ``'outside the image'`` (no pixel in it), the boxes
    mmdet's ``CocoDataset`` skips when it reads the file for training."""
    sizes = {img['id']: (img.get('width'), img.get('height')) for img in coco.get('images', [])}
    found = {'non-positive size': [], 'outside the image': []}
    for i, ann in enumerate(coco.get('annotations', [])):
        bbox = ann.get('bbox')
        if not bbox or len(bbox) != 4:
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            found['non-positive size'].append(i)
            continue
        width, height = sizes.get(ann.get('image_id'), (None, None))
        if width is not None and height is not None and (
                min(x + w, width) - max(x, 0) <= 0 or min(y + h, height) - max(y, 0) <= 0):
            found['outside the image'].append(i)
    return found


def valid_annotations(coco: dict, drop: list[int]) -> dict:
    """``coco`` without the annotations at the indices ``drop``."""
    drop = set(drop)
    return dict(coco, annotations=[a for i, a in enumerate(coco['annotations']) if i not in drop])


def _repeated(values: list) -> dict:
    """The values that occur more than once, with their counts."""
    counts = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return {value: n for value, n in counts.items() if n > 1}


def _uses_masks(cfg: Config, split: str, ds: dict) -> bool:
    loads = any(isinstance(t, dict) and t.get('with_mask') for t in ds.get('pipeline') or [])
    evaluator = cfg.get(f'{split}_evaluator') if split in ('val', 'test') else None
    metrics = [e.get('metric') for e in (evaluator if isinstance(evaluator, list) else [evaluator])
               if isinstance(e, dict)]
    return loads or any(m == 'segm' or isinstance(m, (list, tuple)) and 'segm' in m for m in metrics)


def _check_coco_content(cfg: Config, split: str, ds: dict, coco: dict, ann_path: str) -> list[str]:
    """Refuses what mmdet would train or evaluate wrongly or fail on late; returns warnings for what it leaves out.

    Refused: repeated image ids (pycocotools keeps one image and gives it the boxes of all), repeated annotation ids,
    no annotations at all, none of the config's classes among the file's categories, polygons of fewer than three
    points where masks are used (they fail at evaluation, after the whole inference). Reported: boxes whose category
    is not among the config's classes, or whose image is not in the file (mmdet leaves both out)."""
    where = f'{split} annotation file {ann_path}'
    images, anns = coco['images'], coco.get('annotations') or []
    repeated = _repeated([img.get('id') for img in images])
    if repeated:
        first = next(iter(repeated))
        names = [img.get('file_name') for img in images if img.get('id') == first]
        raise ValueError(f'{where}: {len(repeated)} image ids are used by more than one image (e.g. id {first}: '
                         f'{", ".join(map(str, names[:3]))}): each image needs an id of its own, or it is trained and '
                         'evaluated with the boxes of another; renumber them')
    repeated = _repeated([ann.get('id') for ann in anns])
    if repeated:
        raise ValueError(f'{where}: {len(repeated)} annotation ids are used more than once (e.g. id '
                         f'{next(iter(repeated))}): each box needs an id of its own; renumber them')
    if not anns:
        task = 'train on' if split == 'train' else 'evaluate against'
        raise ValueError(f'{where} lists {len(images)} images but no annotations: there is nothing to {task}. Add '
                         'the boxes, or point the config at the right file')
    warnings = []
    if ds.get('type', 'CocoDataset') == 'CocoDataset':
        from mmdet.datasets import CocoDataset
        classes = tuple((ds.get('metainfo') or {}).get('classes') or CocoDataset.METAINFO['classes'])
        categories = {c.get('id'): c.get('name') for c in coco.get('categories') or []}
        kept = {cid for cid, name in categories.items() if name in classes}
        if not kept:
            raise ValueError(f'{where}: none of the config\'s classes ({", ".join(classes[:6])}'
                             f'{" ..." if len(classes) > 6 else ""}) is among its categories '
                             f'({", ".join(map(str, list(categories.values())[:6])) or "none"}): set the dataset\'s '
                             'metainfo=dict(classes=...) to names of the file\'s categories')
        unknown = [ann for ann in anns if ann.get('category_id') not in kept]
        if unknown:
            ids = sorted({ann.get('category_id') for ann in unknown}, key=str)
            with_box = {ann.get('image_id') for ann in anns if ann.get('category_id') in kept}
            emptied = {ann.get('image_id') for ann in unknown} - with_box
            note = (f'; {len(emptied)} images keep no box' + (', and mmdet\'s filter_empty_gt leaves them out of '
                    'training' if split == 'train' else '') if emptied else '')
            warnings.append(f'{where}: {len(unknown)} of its {len(anns)} boxes have a category that is not among the '
                            f'config\'s classes (category ids {", ".join(map(str, ids[:5]))}; the classes are ids '
                            f'{", ".join(map(str, sorted(kept)))}): left out, as mmdet\'s CocoDataset leaves them '
                            f'out{note}. Add their classes to the config, or remove them from the file to silence this')
    image_ids = {img.get('id') for img in images}
    orphans = [ann for ann in anns if ann.get('image_id') not in image_ids]
    if orphans:
        warnings.append(f'{where}: {len(orphans)} of its {len(anns)} boxes belong to image ids that are not among its '
                        f'images (e.g. {orphans[0].get("image_id")}): left out. Fix the image_id or remove them')
    if _uses_masks(cfg, split, ds):
        short = [(ann, polygon) for ann in anns if isinstance(ann.get('segmentation'), list)
                 for polygon in ann['segmentation'] if not (isinstance(polygon, list) and len(polygon) >= 6
                                                            and len(polygon) % 2 == 0)]
        if short:
            ann, polygon = short[0]
            size = len(polygon) if isinstance(polygon, list) else polygon
            raise ValueError(f'{where}: {len(short)} mask polygons have fewer than 3 points or an odd count of '
                             f'coordinates (e.g. annotation id {ann.get("id")} of image {ann.get("image_id")}: '
                             f'{size} numbers); a polygon is at least 3 (x, y) points, 6 numbers: fix or remove them')
    return warnings


def _check_coco_annotations(cfg: Config, split: str, ds: dict, ann_path: str, img_dir: str) -> list[str]:
    coco = _read_json(ann_path, split)
    if not isinstance(coco, dict) or not isinstance(coco.get('images'), list):
        raise ValueError(f'{split} annotation file {ann_path} is not in COCO format (no "images" list): give a '
                         'COCO-format file (images, annotations, categories)')
    images = coco['images']
    if not images:
        raise ValueError(f'{split} annotation file {ann_path} lists no images: the {split} split is empty; point the '
                         f'config at a split with images, or regenerate it (e.g. tools/make_synthetic_data.py with '
                         f'--num-{"train" if split == "train" else "val"} of at least 1)')
    missing = [img.get('file_name') for img in images
               if not osp.isfile(osp.join(img_dir, str(img.get('file_name'))))]
    if missing:
        raise FileNotFoundError(
            f'{split} split: {len(missing)} of the {len(images)} images listed in {ann_path} are missing from '
            f'{img_dir} (e.g. {missing[0]}): put them there, or remove them from the annotation file')
    warnings = _check_coco_content(cfg, split, ds, coco, ann_path)
    found = invalid_boxes(coco)
    count = sum(map(len, found.values()))
    if not count:
        return warnings
    causes = ', '.join(f'{len(v)} with {k}' if k == 'non-positive size' else f'{len(v)} {k}'
                       for k, v in found.items() if v)
    total = len(coco.get('annotations', []))
    note = 'left out of training, as mmdet\'s CocoDataset does'
    evaluator = cfg.get(f'{split}_evaluator') if split in ('val', 'test') else None
    targets = [e for e in (evaluator if isinstance(evaluator, list) else [evaluator])
               if isinstance(e, dict) and e.get('ann_file') and osp.abspath(e['ann_file']) == osp.abspath(ann_path)]
    if targets:
        out = osp.join(cfg.work_dir, 'valid_annotations', f'{split}_{osp.basename(ann_path)}')
        os.makedirs(osp.dirname(out), exist_ok=True)
        with atomic_output(out) as tmp, open(tmp, 'w') as f:
            json.dump(valid_annotations(coco, [i for v in found.values() for i in v]), f)
        for e in targets:
            e['ann_file'] = out
        note += f', and out of the evaluation\'s ground truth (evaluated against {out})'
    return warnings + [f'{split} annotation file {ann_path}: {count} of its {total} boxes are invalid ({causes}): '
                       f'{note}. Fix or remove them in the file to silence this.']


def _data_folders(cfg: Config, splits: tuple[str, ...] = ('train', 'val', 'test')) -> list[str]:
    """The folders the config's datasets read: data roots, image folders and annotation files' folders."""
    folders = []
    for _, ds in _datasets(cfg, splits):
        root = ds.get('data_root') or ''
        prefix = ds.get('data_prefix')
        img_dir = prefix if isinstance(prefix, str) else (prefix or {}).get('img')
        for path in (root or None, osp.join(root, img_dir) if img_dir else None,
                     osp.dirname(osp.join(root, ds['ann_file'])) if ds.get('ann_file') else None):
            if path:
                folders.append(osp.realpath(path))
    return folders


def check_show_dir(cfg: Config, show_dir: str, force: bool = False) -> None:
    """Refuses, before the evaluation, a ``--show-dir`` that would overwrite anything: one inside the data's own
    folders (even with ``force``), one that holds files (unless ``force``), a file, or one that cannot be written.

    A relative ``show_dir`` lies in the run's new timestamped folder of the work dir (mmdet's convention), so only
    the work dir's folder is checked; an absolute one is checked as it is.

    Raises:
        ValueError: it is in the data, holds files, or is a file.
        PermissionError: it cannot be created or written.
    """
    if not osp.isabs(show_dir):
        folder = osp.abspath(cfg.work_dir)
    else:
        folder = osp.realpath(show_dir)
        for data in _data_folders(cfg):
            if folder == data or folder.startswith(data + os.sep):
                raise ValueError(f'--show-dir {show_dir} lies in the data\'s folder {data}: the drawn images would '
                                 'replace or mix with the dataset\'s files; give a folder outside the data')
        if osp.exists(folder) and not osp.isdir(folder):
            raise ValueError(f'--show-dir {show_dir} is a file: give a folder (new, or empty)')
        if osp.isdir(folder) and os.listdir(folder) and not force:
            raise ValueError(f'--show-dir {show_dir} holds {len(os.listdir(folder))} files or folders: drawn images '
                             'would replace those of the same name; pass --force, or give a new or empty folder')
    existing = folder
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f'cannot write --show-dir {show_dir}: no write permission in {existing}; give '
                              'another folder')
