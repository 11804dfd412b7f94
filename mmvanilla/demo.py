"""The main job: VanillaNet trained from scratch on synthetic shapes, end to end, on CPU.

For RetinaNet, Mask R-CNN and an image classifier: ``train`` (deep training anneals lambda 0 -> 1), ``test`` (COCO
mAP, or top-1 / top-2 accuracy, of the training form), ``reparameterize``, ``test`` again on the deploy form (with a
few visualized detections), then summary tables. Every step runs the real command-line tool, as a user would
(``python -m mmvanilla TOOL``, the packaged ``tools/TOOL.py``), on the packaged configs.

The console shows one line per stage (:class:`StageDisplay`: progress and elapsed time, updated in place on a
terminal); each tool's full output goes to ``<work dir>/<model>/<stage>.log``. A failed stage shows its last lines
and its log's path. ``verbose`` streams everything to the console as well.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mmengine.logging import MMLogger

from .datasets import generate_synthetic_coco, generate_synthetic_image_folder
from .packaged import config_path

NUM_DRAWN = 6


DETECTION_COLUMNS = (('box mAP', 'coco/bbox_mAP'), ('box mAP50', 'coco/bbox_mAP_50'), ('mask mAP', 'coco/segm_mAP'),
                     ('mask mAP50', 'coco/segm_mAP_50'))
CLASSIFICATION_COLUMNS = (('top-1 %', 'accuracy/top1'), ('top-2 %', 'accuracy/top2'))


@dataclass(frozen=True)
class Job:
    name: str
    config: str  # a packaged config, by its path under configs/
    columns: tuple[tuple[str, str], ...]  # (table header, key in tools/test.py's metrics)
    vanillanet: str  # where the config's VanillaNet is: model.<vanillanet>.deploy=True builds the deploy form
    draw: bool  # draw a few predictions of the deploy form
    data: str  # 'coco' or 'imagenet': which synthetic set it trains on


JOBS = (
    Job('RetinaNet', 'retinanet_vanillanet_tiny_synthetic.py', DETECTION_COLUMNS, 'backbone', True, 'coco'),
    Job('Mask R-CNN', 'mask_rcnn_vanillanet_tiny_synthetic.py', DETECTION_COLUMNS, 'backbone', True, 'coco'),
    Job('Classifier', 'vanillanet_tiny_synthetic_cls.py', CLASSIFICATION_COLUMNS, 'network', False,
        'imagenet'),
)


def synthetic_data_root(base: str, params: dict, defaults: dict) -> str:
    """Where a synthetic set of ``params`` lives: ``base`` for the default set, else a folder named by the
    parameters, so sets of other sizes (``--quick``) live beside it instead of colliding with it.

    Example:
        >>> synthetic_data_root('data/synthetic_coco', dict(num_train=16, num_val=8, seed=0),
        ...                     dict(num_train=600, num_val=150, seed=0))
        'data/synthetic_coco_num_train16_num_val8_seed0'
    """
    if params == defaults:
        return base
    return base + ''.join(f'_{key}{value}' for key, value in params.items())


def data_options(job: Job, root: str | Path) -> list[str]:
    """``--cfg-options`` that point a job's config at the synthetic set in ``root``."""
    splits = ('train', 'val', 'test')
    options = [f'{split}_dataloader.dataset.data_root={root}/' for split in splits]
    if job.data == 'coco':
        options += [f'{split}_evaluator.ann_file={root}/annotations/instances_val.json' for split in ('val', 'test')]
    return options


_TRAIN_LINE = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*\d+/\d+\].*?eta: (?:(\d+) days?, )?(\d+):(\d+):(\d+)')
_TEST_LINE = re.compile(r'Epoch\(test\)\s*\[\s*(\d+)/(\d+)\]')
TAIL_LINES = 20


def progress_of(line: str, elapsed: float) -> dict | None:
    """What a line of mmengine's log says of a run's progress: ``fraction`` done (from a training line's ETA, or a
    test line's iteration count) and a ``detail`` (the epoch); None for other lines."""
    match = _TRAIN_LINE.search(line)
    if match:
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups()[1:])
        eta = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        return dict(fraction=elapsed / max(elapsed + eta, 1e-9), detail=f'epoch {match.group(1)}')
    match = _TEST_LINE.search(line)
    if match:
        return dict(fraction=int(match.group(1)) / int(match.group(2)), detail='')
    return None


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f'{minutes // 60}:{minutes % 60:02d}:{seconds:02d}' if minutes >= 60 else f'{minutes}:{seconds:02d}'


class StageDisplay:
    """One console line per stage of the main job: its number, name, a progress bar, percentage, elapsed time.

    On a terminal the line is redrawn in place while the stage runs; elsewhere (a pipe, a file) it is written once,
    when the stage ends, so a log of ``make demo`` holds one line per stage.

    Args:
        total (int): How many stages there are.
        stream (TextIO): Where the lines go. Defaults to ``sys.stdout``.
    """

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total, self.done_count = total, 0
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()

    def line(self, name: str, fraction: float | None, elapsed: float, note: str = '') -> str:
        width = 20
        if fraction is None:
            bar, percent = ' ' * width, '   '
        else:
            fraction = min(max(fraction, 0.0), 1.0)
            filled = int(fraction * width)
            bar, percent = '#' * filled + '-' * (width - filled), f'{fraction * 100:3.0f}%'
        number = f'[{self.done_count + 1:>{len(str(self.total))}}/{self.total}]'
        return f'{number} {name:<34} [{bar}] {percent:>4} {_clock(elapsed):>7}{"  " + note if note else ""}'

    def update(self, name: str, fraction: float | None, elapsed: float, note: str = '') -> None:
        if self.live:
            self.stream.write('\r' + self.line(name, fraction, elapsed, note) + '\x1b[K')
            self.stream.flush()

    def finish(self, name: str, elapsed: float, note: str = '', failed: bool = False) -> None:
        text = self.line(name, None if failed else 1.0, elapsed, note)
        self.stream.write(('\r' if self.live else '') + text + ('\x1b[K' if self.live else '') + '\n')
        self.stream.flush()
        self.done_count += 1


class StageFailed(RuntimeError):
    """A stage of the main job failed; its message names the stage and the log."""


def run_stage(display: StageDisplay, name: str, command: list[str], log: Path, verbose: bool = False) -> float:
    """Runs ``command`` with its output in ``log`` (and on the console if ``verbose``), showing its progress.

    Returns:
        float: Its wall time in seconds.

    Raises:
        StageFailed: it exited with a non-zero status; its last lines were written to the display's stream.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    state = dict(fraction=None, detail='')
    tail = deque(maxlen=TAIL_LINES)
    start = time.perf_counter()
    with open(log, 'w') as f:
        proc = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))

        def pump():
            for text in proc.stdout:
                f.write(text)
                tail.append(text.rstrip('\n'))
                if verbose:
                    display.stream.write(text)
                found = progress_of(text, time.perf_counter() - start)
                if found:
                    state.update(found)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while proc.poll() is None:
            display.update(name, state['fraction'], time.perf_counter() - start, state['detail'])
            time.sleep(0.5)
        reader.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        display.finish(name, seconds, f'FAILED (exit {proc.returncode}); last lines of {log}:', failed=True)
        display.stream.write(''.join(f'    {text}\n' for text in tail))
        display.stream.flush()
        raise StageFailed(f'stage "{name}" failed with exit code {proc.returncode}: its last lines are above; '
                          f'full log: {log}')
    display.finish(name, seconds, str(log))
    return seconds


def stage_count(jobs=JOBS) -> int:
    """The main job's stages: the two data sets, then per job train, test, reparameterize, test, (draw)."""
    return 2 + sum(4 + job.draw for job in jobs)


def run_job(job: Job, work_dir: Path, train_options: list[str], data: list[str], display: StageDisplay,
            verbose: bool = False) -> list[dict]:
    """Train, test, re-parameterize, test again (and draw); returns one summary row per form. ``data``: the
    ``--cfg-options`` of the data set (:func:`data_options`). Each tool's output goes to ``work_dir/<stage>.log``."""
    config = str(config_path(job.config))

    def tool(stage: str, name: str, *args) -> float:
        command = [sys.executable, '-m', 'mmvanilla', name, *args]
        return run_stage(display, f'{job.name}: {stage}', command, work_dir / f'{stage.replace(" ", "_")}.log',
                         verbose)

    train_time = tool('train', 'train', config, '--work-dir', work_dir, '--cfg-options', *data, *train_options)
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    deploy_ckpt = work_dir / 'deploy.pth'
    deploy = [f'model.{job.vanillanet}.deploy=True']
    rows = []
    for form, ckpt, options in (('train', checkpoint, []), ('deploy', deploy_ckpt, deploy)):
        if form == 'deploy':  # --force: the demo's own outputs, replaced at each run
            tool('reparameterize', 'reparameterize', config, checkpoint, deploy_ckpt, '--force', '--cfg-options',
                 *data)
        metrics_file = work_dir / f'metrics_{form}.json'
        tool(f'test {form} form', 'test', config, ckpt, '--work-dir', work_dir / f'test_{form}', '--metrics-out',
             metrics_file, '--force', '--cfg-options', *data, *options)
        metrics = json.loads(metrics_file.read_text())
        rows.append(dict(model=job.name, form=form, train_time=train_time if form == 'train' else None,
                         **{header: metrics.get(key) for header, key in job.columns},
                         images_per_s=metrics['images/s'], test_time=metrics['wall time (s)']))
    if job.draw:
        # Drawn apart from the timed runs: mmdet draws every test image. A few images, no evaluation.
        tool('draw', 'test', config, deploy_ckpt, '--work-dir', work_dir / 'draw', '--show-dir',
             (work_dir / 'vis').resolve(), '--cfg-options', *data, *deploy,
             f'test_dataloader.dataset.indices={NUM_DRAWN}', 'test_evaluator.format_only=True',
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


def run_demo(work_dir: str | Path = 'work_dirs/demo', data_root: str | Path | None = None,
             num_train: int = 600, num_val: int = 150, seed: int = 0, quick: bool = False,
             cls_data_root: str | Path | None = None, verbose: bool = False,
             stream: TextIO | None = None) -> list[dict]:
    """Generates the data (once), runs every job, shows one line per stage, logs and returns the summary rows.

    ``num_train`` / ``num_val`` size the detection set; the classification set has its default size (300 / 100
    images per class). ``quick`` trains each model for 2 epochs (lambda 0, then 1), on 4 / 2 images per class for
    classification, for the tests: the pipeline, not the accuracy. The data roots default to
    ``data/synthetic_coco`` and ``data/synthetic_imagenet`` for the default sets and to folders named by their
    parameters for others (:func:`synthetic_data_root`); they are relative to the working directory. Each tool's
    output goes to ``work_dir/<model>/<stage>.log`` (and to the console too with ``verbose``); the stage lines go
    to ``stream`` (default ``sys.stdout``).

    Raises:
        StageFailed: a stage failed (its last lines are shown, its log named).
    """
    logger = MMLogger.get_instance('mmvanilla')
    display = StageDisplay(stage_count(), stream)
    start = time.perf_counter()
    if data_root is None:
        data_root = synthetic_data_root('data/synthetic_coco', dict(num_train=num_train, num_val=num_val, seed=seed),
                                        dict(num_train=600, num_val=150, seed=0))
    sizes = dict(num_train=4, num_val=2) if quick else dict(num_train=300, num_val=100)
    if cls_data_root is None:
        cls_data_root = synthetic_data_root('data/synthetic_imagenet', dict(sizes, seed=seed),
                                            dict(num_train=300, num_val=100, seed=0))
    for name, generate, root, kwargs, unit in (
            ('detection data', generate_synthetic_coco, data_root, dict(num_train=num_train, num_val=num_val),
             'images'),
            ('classification data', generate_synthetic_image_folder, cls_data_root, sizes, 'images')):
        began = time.perf_counter()
        display.update(name, None, 0.0)
        summary = generate(root, seed=seed, **kwargs)
        display.finish(name, time.perf_counter() - began, f'{summary["train"]["num_images"]} train / '
                       f'{summary["val"]["num_images"]} val {unit} in {root}')
    options = []
    if quick:
        options = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2', 'custom_hooks.0.decay_epochs=1',
                   'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1']
    rows = {}
    for job in JOBS:
        job_dir = Path(work_dir) / job.name.lower().replace(' ', '_').replace('-', '_')
        root = data_root if job.data == 'coco' else cls_data_root
        rows[job] = run_job(job, job_dir, options, data_options(job, root), display, verbose)
    tables = []
    for columns in dict.fromkeys(job.columns for job in JOBS):
        tables.append(format_table([row for job in JOBS if job.columns == columns for row in rows[job]], columns))
    logger.info(f'summary ({time.perf_counter() - start:.0f} s in all; test time and images/s: tools/test.py on the '
                f'val split, evaluation included; drawn detections in {work_dir}/*/vis; logs in '
                f'{work_dir}/*/*.log):\n' + '\n\n'.join(tables))
    return [row for job in JOBS for row in rows[job]]
