"""The main job: VanillaNet trained from scratch on synthetic shapes, end to end, on CPU.

For RetinaNet, Mask R-CNN and an image classifier: ``tools/train.py`` (deep training anneals lambda 0 -> 1),
``tools/test.py`` (COCO mAP, or top-1 / top-2 accuracy, of the training form), ``tools/reparameterize.py``,
``tools/test.py`` again on the deploy form (with a few visualized detections), then summary tables. Every step runs
the real command-line tool, as a user would.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmengine.logging import MMLogger

from .datasets import generate_synthetic_coco, generate_synthetic_image_folder

ROOT = Path(__file__).resolve().parents[1]
NUM_DRAWN = 6


DETECTION_COLUMNS = (('box mAP', 'coco/bbox_mAP'), ('box mAP50', 'coco/bbox_mAP_50'), ('mask mAP', 'coco/segm_mAP'),
                     ('mask mAP50', 'coco/segm_mAP_50'))
CLASSIFICATION_COLUMNS = (('top-1 %', 'accuracy/top1'), ('top-2 %', 'accuracy/top2'))


@dataclass(frozen=True)
class Job:
    name: str
    config: str
    columns: tuple[tuple[str, str], ...]  # (table header, key in tools/test.py's metrics)
    vanillanet: str  # where the config's VanillaNet is: model.<vanillanet>.deploy=True builds the deploy form
    draw: bool  # draw a few predictions of the deploy form


JOBS = (
    Job('RetinaNet', 'configs/retinanet_vanillanet_tiny_synthetic.py', DETECTION_COLUMNS, 'backbone', True),
    Job('Mask R-CNN', 'configs/mask_rcnn_vanillanet_tiny_synthetic.py', DETECTION_COLUMNS, 'backbone', True),
    Job('Classifier', 'configs/vanillanet_tiny_synthetic_cls.py', CLASSIFICATION_COLUMNS, 'network', False),
)


def _tool(tool: str, *args: str) -> float:
    """Runs ``tools/<tool>`` with its output streaming to the console; returns its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *map(str, args)])
    if proc.returncode != 0:
        raise RuntimeError(f'tools/{tool} {" ".join(map(str, args))} failed with exit code {proc.returncode}')
    return time.perf_counter() - start


def run_job(job: Job, work_dir: Path, train_options: list[str]) -> list[dict]:
    """Train, test, re-parameterize, test again; returns one summary row per form."""
    config = str(ROOT / job.config)
    options = ['--cfg-options', *train_options] if train_options else []
    train_time = _tool('train.py', config, '--work-dir', work_dir, *options)
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    deploy_ckpt = work_dir / 'deploy.pth'
    deploy = ['--cfg-options', f'model.{job.vanillanet}.deploy=True']
    rows = []
    for form, ckpt, options in (('train', checkpoint, []), ('deploy', deploy_ckpt, deploy)):
        if form == 'deploy':
            _tool('reparameterize.py', config, checkpoint, deploy_ckpt)
        metrics_file = work_dir / f'metrics_{form}.json'
        _tool('test.py', config, ckpt, '--work-dir', work_dir / f'test_{form}', '--metrics-out', metrics_file,
              *options)
        metrics = json.loads(metrics_file.read_text())
        rows.append(dict(model=job.name, form=form, train_time=train_time if form == 'train' else None,
                         **{header: metrics.get(key) for header, key in job.columns},
                         images_per_s=metrics['images/s'], test_time=metrics['wall time (s)']))
    if job.draw:
        # Drawn apart from the timed runs: mmdet draws every test image. A few images, no evaluation.
        _tool('test.py', config, deploy_ckpt, '--work-dir', work_dir / 'draw', '--show-dir',
              (work_dir / 'vis').resolve(), *deploy, f'test_dataloader.dataset.indices={NUM_DRAWN}',
              'test_evaluator.format_only=True',
              f'test_evaluator.outfile_prefix={work_dir.resolve() / "draw" / "predictions"}')
    return rows


def format_table(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> str:
    """A Markdown table of the summary rows; a metric that could not be computed (no detection) shows '-'."""
    def num(value, fmt):
        return '-' if value is None else format(value, fmt)
    headers = [header for header, _ in columns]
    lines = ['| model | form | ' + ' | '.join(headers) + ' | train time | test time | test images/s |',
             '|---|---|' + '---|' * (len(headers) + 3)]
    for r in rows:
        metrics = ' | '.join(num(r.get(h), '.1f' if h.endswith('%') else '.3f') for h in headers)
        train_time = '-' if r['train_time'] is None else f'{r["train_time"]:.0f} s'
        lines.append(f'| {r["model"]} | {r["form"]} | {metrics} | {train_time} | {r["test_time"]:.1f} s | '
                     f'{r["images_per_s"]:.1f} |')
    return '\n'.join(lines)


def run_demo(work_dir: str | Path = 'work_dirs/demo', data_root: str | Path = 'data/synthetic_coco',
             num_train: int = 600, num_val: int = 150, seed: int = 0, quick: bool = False,
             cls_data_root: str | Path = 'data/synthetic_imagenet') -> list[dict]:
    """Generates the data (once), runs every job, logs and returns the summary rows.

    ``num_train`` / ``num_val`` size the detection set; the classification set has its default size (300 / 100
    images per class). ``quick`` trains each model for 2 epochs (lambda 0, then 1), on 4 / 2 images per class for
    classification, for the tests: the pipeline, not the accuracy. The data roots are relative to the working
    directory, as the configs' ``data_root`` is.
    """
    logger = MMLogger.get_instance('mmvanilla')
    start = time.perf_counter()
    summary = generate_synthetic_coco(data_root, num_train=num_train, num_val=num_val, seed=seed)
    logger.info(f'detection data: {summary["train"]["num_images"]} train / {summary["val"]["num_images"]} val '
                f'images of {", ".join(summary["classes"])} in {data_root}')
    sizes = dict(num_train=4, num_val=2) if quick else {}
    summary = generate_synthetic_image_folder(cls_data_root, seed=seed, **sizes)
    logger.info(f'classification data: {summary["train"]["num_images"]} train / {summary["val"]["num_images"]} '
                f'val images in {cls_data_root}')
    options = []
    if quick:
        options = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'custom_hooks.0.decay_epochs=1',
                   'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1']
    rows = {}
    for job in JOBS:
        job_dir = Path(work_dir) / job.name.lower().replace(' ', '_').replace('-', '_')
        rows[job] = run_job(job, job_dir, options)
    tables = []
    for columns in dict.fromkeys(job.columns for job in JOBS):
        tables.append(format_table([row for job in JOBS if job.columns == columns for row in rows[job]], columns))
    logger.info(f'summary ({time.perf_counter() - start:.0f} s in all; test time and images/s: tools/test.py on the '
                f'val split, evaluation included; drawn detections in {work_dir}/*/vis):\n' + '\n\n'.join(tables))
    return [row for job in JOBS for row in rows[job]]
