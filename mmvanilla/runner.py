"""What tools/train.py and tools/test.py do, as functions: build the config, check the data, run.

Follows mmdet 3.x's command-line conventions (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``, ``--show-dir``), and imports mmvanilla so a config works even without ``custom_imports``.
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import sys
import time

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

import mmvanilla  # noqa: F401  (registers VanillaNet, hooks, the checkpoint allowlist)

from .models.utils import get_act_lambda


def load_config(config: str, work_dir: str | None = None, cfg_options: dict | None = None,
                launcher: str = 'none') -> Config:
    """Reads a config, applies ``--cfg-options`` and picks the work dir (``work_dirs/<config name>`` by default)."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config} not found')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


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


def check_data(cfg: Config, splits: tuple[str, ...]) -> None:
    """Fails early, with one clear message, when an annotation file or image folder the config names is missing."""
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


def train(cfg: Config, resume: str | bool | None = None, amp: bool = False, auto_scale_lr: bool = False) -> Runner:
    """Trains with mmengine's runner. ``resume``: a checkpoint path, True for the latest in the work dir, or None."""
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if resume is True:
        cfg.resume, cfg.load_from = True, None
    elif resume:
        cfg.resume, cfg.load_from = True, resume
    check_data(cfg, ('train', 'val'))
    use_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test(cfg: Config, checkpoint: str, show_dir: str | None = None, metrics_out: str | None = None) -> dict:
    """Evaluates ``checkpoint`` on the test split; returns the metrics with ``images/s`` and ``wall time (s)``."""
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} not found')
    cfg.load_from = checkpoint
    if show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise KeyError('--show-dir needs a visualization hook in default_hooks (mmdet configs have one)')
        vis.update(draw=True, test_out_dir=show_dir, interval=vis.get('interval', 1))
    check_data(cfg, ('test',))
    use_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
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
        os.makedirs(osp.dirname(osp.abspath(metrics_out)), exist_ok=True)
        with open(metrics_out, 'w') as f:
            json.dump({k: float(v) if isinstance(v, (int, float)) else str(v) for k, v in metrics.items()}, f,
                      indent=2)
    return metrics


@contextlib.contextmanager
def clear_errors():
    """For command-line tools: a bad input (missing file, wrong arch, mismatched checkpoint) prints one line.

    Set ``MMVANILLA_DEBUG=1`` for the full traceback.
    """
    try:
        yield
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        if os.environ.get('MMVANILLA_DEBUG'):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)
