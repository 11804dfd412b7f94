"""What tools/train.py and tools/test.py do, as functions: build the config, check it and the data, run.

Follows mmdet 3.x's command-line conventions (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``, ``--show-dir``), and imports mmvanilla so a config works even without ``custom_imports``.

Everything a run will need is checked before it starts, each with one message that names the file or setting, the
cause and the fix: the config, the backbone's norm, the annotation files and images, the checkpoint to evaluate,
resume or start from (it must fit the model). Checkpoints are written whole (:class:`AtomicCheckpointRunner`), and
``--resume`` takes the newest complete one (:func:`find_resume_checkpoint`), so an interrupted run loses nothing
that was finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import re
import sys
import time

import torch
from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

import mmvanilla  # noqa: F401  (registers VanillaNet, hooks, the checkpoint allowlist)

from .apis import check_checkpoint_fits
from .checkpoint import describe_checkpoint, is_complete_checkpoint, read_checkpoint
from .models.utils import get_act_lambda
from .outputs import atomic_output, check_output


def load_config(config: str, work_dir: str | None = None, cfg_options: dict | None = None,
                launcher: str = 'none') -> Config:
    """Reads a config, applies ``--cfg-options`` and picks the work dir (``work_dirs/<config name>`` by default)."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config} not found')
    try:
        cfg = Config.fromfile(config)
    except SyntaxError as e:
        raise ValueError(_syntax_error_message(config, e)) from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(config))[0])
    check_model_config(cfg)
    return cfg


def _syntax_error_message(config: str, error: SyntaxError) -> str:
    # mmengine re-raises the parser's error with the file in its text and "<unknown>" as its file name.
    cause = error.__cause__ if isinstance(error.__cause__, SyntaxError) else error
    text = str(error)
    named = re.search(r'config file (\S+?):', text)
    where = named.group(1) if named else (cause.filename if cause.filename not in (None, '<unknown>') else config)
    line = f', line {cause.lineno}' if cause.lineno else ''
    source = f': {cause.text.strip()}' if cause.text and cause.text.strip() else ''
    return f'config file {where}{line}: {cause.msg}{source}; fix the Python syntax there'


def _vanillanet_settings(cfg: Config):
    """(setting path, dict) of every VanillaNet in ``cfg.model`` (a detector's backbone, a classifier's network)."""
    stack = [('model', cfg.get('model') or {})]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        if str(node.get('type', '')).split('.')[-1] in ('VanillaNet', 'VanillaNetClassifier'):
            yield path, node
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((f'{path}.{key}', value))


def check_model_config(cfg: Config) -> None:
    """Refuses settings VanillaNet cannot build, before anything is built: a norm that cannot be folded.

    Raises:
        ValueError: ``norm_cfg`` of a VanillaNet is not a BatchNorm type.
    """
    from .models.layers import check_fusable_norm
    for path, node in _vanillanet_settings(cfg):
        norm_cfg = node.get('norm_cfg')
        if isinstance(norm_cfg, dict) and 'type' in norm_cfg:
            check_fusable_norm(norm_cfg, f'{path}.norm_cfg')


def use_cpu_distributed(cfg: Config) -> None:
    """Distributed runs without GPUs: a gloo process group, DDP without device ids, per-process BatchNorm.

    mmengine's launcher calls ``torch.cuda.set_device``, defaults to NCCL and wraps with ``device_ids=[local_rank]``,
    which DDP refuses for CPU modules; SyncBN has no CPU kernel. Does nothing with GPUs or without a launcher.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')  # from torchrun's environment variables
    # mmengine fills in device_ids=[local_rank] unless the config names them; as in its GPU default, buffers stay local.
    cfg.setdefault('model_wrapper_cfg', dict(type='MMDistributedDataParallel', device_ids=None,
                                             broadcast_buffers=False))
    if cfg.get('sync_bn'):
        MMLogger.get_current_instance().warning(
            f'sync_bn={cfg.sync_bn!r} ignored: SyncBN needs GPUs; each CPU process keeps its own BatchNorm statistics')
        cfg.sync_bn = None


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
    images, and images the annotations list but the folder lacks. Boxes of non-positive width or height, or wholly
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
            warning = _check_coco_annotations(cfg, split, osp.join(root, ann), osp.join(root, img_dir or ''))
            if warning:
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


def _check_coco_annotations(cfg: Config, split: str, ann_path: str, img_dir: str) -> str | None:
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
    found = invalid_boxes(coco)
    count = sum(map(len, found.values()))
    if not count:
        return None
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
    return (f'{split} annotation file {ann_path}: {count} of its {total} boxes are invalid ({causes}): {note}. Fix '
            'or remove them in the file to silence this.')


class AtomicCheckpointRunner(Runner):
    """mmengine's ``Runner``, writing each checkpoint whole: to a temporary name beside it, renamed when complete.

    mmengine writes ``epoch_N.pth`` in place, then ``last_checkpoint``; a run stopped in between (Ctrl-C, a job
    time limit) leaves half a file under a whole file's name. Here ``epoch_N.pth`` only ever appears complete.
    Remote ``out_dir`` back-ends (``s3://`` ...) are left to mmengine.
    """

    @master_only  # as mmengine's: the other ranks save nothing
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        if '://' in str(out_dir):
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        os.makedirs(out_dir, exist_ok=True)
        with atomic_output(osp.join(out_dir, filename)) as tmp:
            super().save_checkpoint(osp.dirname(tmp), osp.basename(tmp), *args, **kwargs)


_CHECKPOINT_NAME = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


def find_resume_checkpoint(work_dir: str) -> tuple[str | None, list[str]]:
    """The newest complete checkpoint of a run, whatever ``last_checkpoint`` says, and the incomplete ones skipped.

    Looks at the ``epoch_N.pth`` / ``iter_N.pth`` files in ``work_dir`` and in the folder ``last_checkpoint`` names,
    newest (highest N, then latest written) first, and takes the first that is complete
    (:func:`~mmvanilla.checkpoint.is_complete_checkpoint`): ``last_checkpoint`` may be missing (a run stopped
    between writing the checkpoint and it) or stale, and a checkpoint may be half written (mmengine before
    :class:`AtomicCheckpointRunner`, or a copy).

    Returns:
        tuple[str | None, list[str]]: The checkpoint (None if there is none) and the incomplete files passed over.
    """
    folders = {osp.abspath(work_dir)}
    named = _last_checkpoint(work_dir)
    if named:
        folders.add(osp.dirname(osp.abspath(named)))
    candidates = []
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = _CHECKPOINT_NAME.match(name)
            if match:
                path = osp.join(folder, name)
                candidates.append((int(match.group(1)), osp.getmtime(path), path))
    skipped = []
    for _, _, path in sorted(candidates, reverse=True):
        if is_complete_checkpoint(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def _last_checkpoint(work_dir: str) -> str | None:
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            return f.read().strip() or None
    except OSError:
        return None


def check_pretrained(cfg: Config) -> None:
    """Reads every local ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` of ``cfg.model`` before training, so
    a missing, broken or unsafe file is named in one line (:func:`~mmvanilla.checkpoint.read_checkpoint`) instead of
    failing inside the model's initialization."""
    stack = [cfg.get('model') or {}]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            init_cfgs = node.get('init_cfg')
            for init_cfg in init_cfgs if isinstance(init_cfgs, list) else [init_cfgs]:
                path = init_cfg.get('checkpoint') if isinstance(init_cfg, dict) else None
                if init_cfg and init_cfg.get('type') == 'Pretrained' and path and '://' not in str(path):
                    read_checkpoint(path)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(node)


def _resolve_resume(cfg: Config, resume: str | bool) -> None:
    """Sets ``cfg.resume`` / ``cfg.load_from`` for ``--resume [CKPT]``, checking the checkpoint fits the model."""
    logger = MMLogger.get_current_instance()
    if resume is True:
        found, skipped = find_resume_checkpoint(cfg.work_dir)
        for path in skipped:
            logger.warning(f'{path} is incomplete (its saving was cut short): not resumed from')
        if found is None:
            logger.warning(f'--resume: no complete checkpoint in {cfg.work_dir}: training starts from the beginning')
            cfg.resume, cfg.load_from = False, None
            return
        named = _last_checkpoint(cfg.work_dir)
        if named is None or osp.abspath(named) != osp.abspath(found):
            logger.warning(f'--resume: resuming from {found}, the newest complete checkpoint (last_checkpoint '
                           f'{"names " + named if named else "is missing"})')
        resume = found
    check_checkpoint_fits(cfg, resume, 'resume')
    cfg.resume, cfg.load_from = True, resume


@contextlib.contextmanager
def _explained_run_errors(checkpoint: str | None = None):
    """Turns what fails inside a run because of its inputs into one line: an image that cannot be read (also from
    a DataLoader worker), a resumed checkpoint whose optimizer state is another config's."""
    try:
        yield
    except Exception as e:  # noqa: BLE001  re-raised unless recognized
        text = str(e)
        # The last match: a DataLoader worker's traceback quotes the source line before the message.
        image = (re.findall(r'failed to load image: ([^\s{}]+)', text)
                 or re.findall(r"cannot identify image file '([^']+)'", text))
        if image:
            raise ValueError(f'image {image[-1]} cannot be decoded (corrupt, truncated or not an image): replace '
                             'it, or remove it from the annotation file (or folder)') from None
        missing = re.findall(r"No such file or directory: '([^']+)'", text)
        if missing and 'DataLoader worker' in text:
            raise FileNotFoundError(f'image {missing[-1]} not found: put it back, or remove it from the '
                                    'annotation file') from None
        if checkpoint and "parameter group that doesn't match" in text:
            raise ValueError(
                f'{checkpoint}: its optimizer state does not fit this config\'s optimizer: it was trained with another '
                f'config ({describe_checkpoint(read_checkpoint(checkpoint))}). Resume with the config it was trained '
                f'with, or start from its weights alone with --cfg-options load_from={checkpoint} and no --resume'
            ) from None
        raise


def train(cfg: Config, resume: str | bool | None = None, amp: bool = False, auto_scale_lr: bool = False) -> Runner:
    """Trains with mmengine's runner. ``resume``: a checkpoint path, True for the newest complete one in the work
    dir (:func:`find_resume_checkpoint`), or None.

    Before training: the data (:func:`check_data`), pretrained weights (:func:`check_pretrained`) and the checkpoint
    to resume or start from (:func:`~mmvanilla.apis.check_checkpoint_fits`) are checked. Interrupted (Ctrl-C), it
    logs which checkpoint ``--resume`` will continue from and re-raises.
    """
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    check_data(cfg, ('train', 'val'))
    check_pretrained(cfg)
    if resume:
        _resolve_resume(cfg, resume)
    elif cfg.get('load_from'):
        fit = check_checkpoint_fits(cfg, cfg.load_from, 'load_from')
        if not fit.fits:
            MMLogger.get_current_instance().warning(f'load_from {cfg.load_from}: {fit.summary()}: left out')
    use_cpu_distributed(cfg)
    runner = AtomicCheckpointRunner.from_cfg(cfg)
    try:
        with _explained_run_errors(cfg.load_from if cfg.get('resume') else None):
            runner.train()
    except KeyboardInterrupt:
        found, _ = find_resume_checkpoint(cfg.work_dir)
        runner.logger.error('interrupted: ' + (f'the newest complete checkpoint is {found}; continue with --resume'
                                               if found else 'no checkpoint was saved yet'))
        raise
    return runner


def test(cfg: Config, checkpoint: str, show_dir: str | None = None, metrics_out: str | None = None,
         force: bool = False) -> dict:
    """Evaluates ``checkpoint`` on the test split; returns the metrics with ``images/s`` and ``wall time (s)``.

    Checked first: the checkpoint fits the model (:func:`~mmvanilla.apis.check_checkpoint_fits`), the data
    (:func:`check_data`), and ``metrics_out`` (a new file, or ``force``), which is written whole.
    """
    if metrics_out:
        check_output(metrics_out, force, inputs=[checkpoint], what='metrics file')
    check_checkpoint_fits(cfg, checkpoint, 'evaluate')
    cfg.load_from = checkpoint
    if show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise KeyError('--show-dir needs a visualization hook in default_hooks (mmdet configs have one)')
        vis.update(draw=True, test_out_dir=show_dir, interval=vis.get('interval', 1))
    check_data(cfg, ('test',))
    use_cpu_distributed(cfg)
    runner = AtomicCheckpointRunner.from_cfg(cfg)
    start = time.perf_counter()
    with _explained_run_errors():
        metrics = dict(runner.test())
    seconds = time.perf_counter() - start
    metrics['wall time (s)'] = seconds
    metrics['images/s'] = len(runner.test_dataloader.dataset) / seconds
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    lam = get_act_lambda(model)
    if lam is not None:
        metrics['act_lambda'] = lam
        if lam < 1.0:
            runner.logger.warning(f'evaluated a model in mid deep-training (lambda={lam:g}): it cannot be '
                                  're-parameterized until lambda reaches 1')
    if metrics_out:
        with atomic_output(metrics_out) as tmp, open(tmp, 'w') as f:
            json.dump({k: float(v) if isinstance(v, (int, float)) else str(v) for k, v in metrics.items()}, f,
                      indent=2)
    return metrics


@contextlib.contextmanager
def clear_errors():
    """For command-line tools: a bad input (missing file, wrong arch, mismatched checkpoint) prints one line and
    exits with status 2; Ctrl-C prints ``interrupted`` and exits with 130.

    Set ``MMVANILLA_DEBUG=1`` for the full traceback.
    """
    try:
        yield
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        if os.environ.get('MMVANILLA_DEBUG'):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if os.environ.get('MMVANILLA_DEBUG'):
            raise
        print('interrupted', file=sys.stderr)
        sys.exit(130)
