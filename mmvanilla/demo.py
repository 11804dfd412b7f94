"""The main job: detection with VanillaNet trained from scratch on the synthetic shapes, end to end, on CPU.

For RetinaNet, then Mask R-CNN: ``tools/train.py`` (deep training anneals lambda 0 -> 1), ``tools/test.py`` (COCO mAP
of the training form), ``tools/reparameterize.py``, ``tools/test.py`` again on the deploy form (with a few
visualized predictions), then one summary table. Every step runs the real command-line tool, as a user would.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mmengine.logging import MMLogger

from .datasets import generate_synthetic_coco

ROOT = Path(__file__).resolve().parents[1]
NUM_DRAWN = 6


@dataclass
class Job:
    name: str
    config: str
    metrics: tuple[str, ...]


JOBS = (
    Job('RetinaNet', 'configs/retinanet_vanillanet_tiny_synthetic.py', ('bbox',)),
    Job('Mask R-CNN', 'configs/mask_rcnn_vanillanet_tiny_synthetic.py', ('bbox', 'segm')),
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
    deploy = ['--cfg-options', 'model.backbone.deploy=True']
    rows = []
    for form, ckpt, options in (('train', checkpoint, []), ('deploy', deploy_ckpt, deploy)):
        if form == 'deploy':
            _tool('reparameterize.py', config, checkpoint, deploy_ckpt)
        metrics_file = work_dir / f'metrics_{form}.json'
        _tool('test.py', config, ckpt, '--work-dir', work_dir / f'test_{form}', '--metrics-out', metrics_file,
              *options)
        metrics = json.loads(metrics_file.read_text())
        rows.append(dict(model=job.name, form=form, train_time=train_time if form == 'train' else None,
                         **{f'{m} mAP': metrics.get(f'coco/{m}_mAP') for m in job.metrics},
                         **{f'{m} mAP50': metrics.get(f'coco/{m}_mAP_50') for m in job.metrics},
                         images_per_s=metrics['images/s'], test_time=metrics['wall time (s)']))
    # Drawn apart from the timed runs: mmdet draws every test image. A few images, no evaluation.
    _tool('test.py', config, deploy_ckpt, '--work-dir', work_dir / 'draw', '--show-dir', (work_dir / 'vis').resolve(),
          *deploy, f'test_dataloader.dataset.indices={NUM_DRAWN}', 'test_evaluator.format_only=True',
          f'test_evaluator.outfile_prefix={work_dir.resolve() / "draw" / "predictions"}')
    return rows


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the summary rows; a metric that mmdet could not compute (no detection) shows '-'."""
    def num(value, fmt):
        return '-' if value is None else format(value, fmt)
    lines = ['| model | form | box mAP | box mAP50 | mask mAP | mask mAP50 | train time | test time | test images/s |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["model"]} | {r["form"]} | {num(r.get("bbox mAP"), ".3f")} | '
                     f'{num(r.get("bbox mAP50"), ".3f")} | {num(r.get("segm mAP"), ".3f")} | '
                     f'{num(r.get("segm mAP50"), ".3f")} | {num(r["train_time"], ".0f")}{"" if r["train_time"] is None else " s"} | '
                     f'{r["test_time"]:.1f} s | {r["images_per_s"]:.1f} |')
    return '\n'.join(lines)


def run_demo(work_dir: str | Path = 'work_dirs/demo', data_root: str | Path = 'data/synthetic_coco',
             num_train: int = 600, num_val: int = 150, seed: int = 0, quick: bool = False) -> list[dict]:
    """Generates the data (once), runs every job, logs and returns the summary rows.

    ``quick`` trains each model for 2 epochs (lambda 0, then 1) on whatever data size is given, for the tests: the
    pipeline, not the accuracy. The data root is relative to the working directory, as the configs' ``data_root`` is.
    """
    logger = MMLogger.get_instance('mmvanilla')
    start = time.perf_counter()
    summary = generate_synthetic_coco(data_root, num_train=num_train, num_val=num_val, seed=seed)
    logger.info(f'data: {summary["train"]["num_images"]} train / {summary["val"]["num_images"]} val images of '
                f'{", ".join(summary["classes"])} in {data_root}')
    options = []
    if quick:
        options = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'custom_hooks.0.decay_epochs=1',
                   'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1']
    rows = []
    for job in JOBS:
        job_dir = Path(work_dir) / job.name.lower().replace(' ', '_').replace('-', '_')
        rows.extend(run_job(job, job_dir, options))
    table = format_table(rows)
    logger.info(f'summary ({time.perf_counter() - start:.0f} s in all; test time and images/s: tools/test.py on the '
                f'val split, COCO evaluation included; drawn predictions in {work_dir}/*/vis):\n{table}')
    return rows
