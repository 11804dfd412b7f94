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
import difflib
import inspect
import json
import os
import os.path as osp
import re
import signal
import sys
import time

import torch
from mmengine.config import Config
from mmengine.dist import master_only
from mmengine.hooks import CheckpointHook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

import mmvanilla  # noqa: F401  (registers VanillaNet, hooks, the checkpoint allowlist)

from .apis import check_checkpoint_fits, check_model_builds
from .checkpoint import describe_checkpoint, is_complete_checkpoint, read_checkpoint
from .data_checks import check_data, check_show_dir
from .engine.hooks import NonFiniteLoss, NonFiniteLossHook
from .engine.interrupts import (Interrupted, StopOnSignalHook, raise_if_interrupted, received_signal,
                                signal_takes_precedence, stop_on_signals)
from .models.utils import get_act_lambda
from .outputs import atomic_output, check_output, describe_missing
from .work_dir import check_work_dir_free, hold_work_dir


def load_config(config: str, work_dir: str | None = None, cfg_options: dict | None = None,
                launcher: str = 'none') -> Config:
    """Reads a config, applies ``--cfg-options`` and picks the work dir (``work_dirs/<config name>`` by default)."""
    if not osp.isfile(config):
        raise FileNotFoundError(describe_missing(config, 'config file'))
    try:
        cfg = Config.fromfile(config)
    except SyntaxError as e:
        raise ValueError(_syntax_error_message(config, e)) from None
    except TypeError as e:  # mmengine's merge of a config with its _base_: says what clashes and how to fix it
        raise ValueError(f'config file {config}: {" ".join(str(e).split())}') from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except (TypeError, KeyError) as e:  # e.g. a key under a setting that is None in the config
            message = ' '.join(str(e.args[0] if e.args else e).split())
            raise ValueError(f'--cfg-options: {message} Set it in a config file that inherits {config} instead') \
                from None
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
    """Refuses settings VanillaNet cannot build, before anything is built: a setting it does not have (a typo, with
    the closest name), a norm that cannot be folded.

    Raises:
        ValueError: a VanillaNet setting is unknown, or its ``norm_cfg`` is not a BatchNorm type.
    """
    from .models import VanillaNet, VanillaNetClassifier
    from .models.layers import check_fusable_norm
    for path, node in _vanillanet_settings(cfg):
        cls = VanillaNet if str(node['type']).split('.')[-1] == 'VanillaNet' else VanillaNetClassifier
        known = [name for name in inspect.signature(cls.__init__).parameters if name != 'self']
        for key in node:
            if key not in known and key not in ('type', '_scope_'):
                close = difflib.get_close_matches(key, known, n=1)
                hint = f'did you mean {close[0]}? ' if close else ''
                raise ValueError(f'{path}.{key}: {cls.__name__} has no setting {key!r}; {hint}its settings are '
                                 f'{", ".join(known)}')
        norm_cfg = node.get('norm_cfg')
        if isinstance(norm_cfg, dict) and 'type' in norm_cfg:
            check_fusable_norm(norm_cfg, f'{path}.norm_cfg')


def check_training_config(cfg: Config) -> None:
    """Refuses settings that build but cannot train: a VanillaNet in deploy form (re-parameterized, no lambda)
    under a ``DeepTrainingHook``, which anneals a lambda it does not have.

    Raises:
        ValueError: naming the setting and the fix.
    """
    hooks = [h for h in cfg.get('custom_hooks') or [] if str(h.get('type', '')).split('.')[-1] == 'DeepTrainingHook']
    for path, node in _vanillanet_settings(cfg):
        if node.get('deploy') and hooks:
            raise ValueError(f'{path}.deploy=True builds the re-parameterized form, which has no deep-training lambda '
                             'for the DeepTrainingHook of custom_hooks to anneal: train with deploy=False (and convert '
                             'with tools/reparameterize.py afterwards), or fine-tune the deploy form without the hook '
                             '(--cfg-options custom_hooks=[])')


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


class KeepUntilSavedCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, removing a checkpoint past ``max_keep_ckpts`` (or the previous best one) only
    once the new checkpoint is saved and ``last_checkpoint`` names it.

    mmengine's removes the oldest checkpoint first, then saves: with ``max_keep_ckpts=1``, a run stopped during the
    save (Ctrl-C, a job time limit, a full disk) is left with no checkpoint at all. Here the same files are removed,
    after the save; a run stopped before that keeps one more checkpoint than asked, never one fewer.
    """

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        with self._removals_after_the_save():
            super()._save_checkpoint_with_step(runner, step, meta)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        with self._removals_after_the_save():
            super()._save_best_checkpoint(runner, metrics)

    @contextlib.contextmanager
    def _removals_after_the_save(self):
        if isinstance(self.file_backend, _RemovalsAfterTheSave):  # the best checkpoint's save goes through both
            yield
            return
        backend = self.file_backend = _RemovalsAfterTheSave(self.file_backend)
        try:
            yield  # an exception here (the save interrupted or failed) skips the removals
        finally:
            self.file_backend = backend.backend
        for remove, path in backend.removals:
            remove(path)


class _RemovalsAfterTheSave:
    """A file back-end that records ``remove`` and ``rmtree`` instead of doing them; the rest it passes on."""

    def __init__(self, backend) -> None:
        self.backend, self.removals = backend, []

    def remove(self, path) -> None:
        self.removals.append((self.backend.remove, path))

    def rmtree(self, path) -> None:
        self.removals.append((self.backend.rmtree, path))

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


class AtomicCheckpointRunner(Runner):
    """mmengine's ``Runner``, writing each checkpoint whole: to a temporary name beside it, renamed when complete,
    and removing old checkpoints only after that (:class:`KeepUntilSavedCheckpointHook`).

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

    def register_default_hooks(self, hooks: dict | None = None) -> None:
        """mmengine's default hooks, with mmengine's ``CheckpointHook`` (the default one too) replaced by
        :class:`KeepUntilSavedCheckpointHook` with the same settings."""
        hooks = dict(hooks or {})
        checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook', interval=1))
        if isinstance(checkpoint, dict) and checkpoint.get('type') in ('CheckpointHook', CheckpointHook):
            hooks['checkpoint'] = dict(checkpoint, type=KeepUntilSavedCheckpointHook)
        super().register_default_hooks(hooks)


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
    failing inside the model's initialization. A VanillaNet's own is also loaded into it (built on the meta device)
    the way mmengine will load it, so that a checkpoint of another arch or act_num, or one that would load no weight
    at all (mmengine only warns, and trains from random weights), is refused now."""
    stack = [('model', cfg.get('model') or {})]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            init_cfgs = node.get('init_cfg')
            for init_cfg in init_cfgs if isinstance(init_cfgs, list) else [init_cfgs]:
                path = init_cfg.get('checkpoint') if isinstance(init_cfg, dict) else None
                if init_cfg and init_cfg.get('type') == 'Pretrained' and path and '://' not in str(path):
                    checkpoint = read_checkpoint(path)
                    if str(node.get('type', '')).split('.')[-1] == 'VanillaNet':
                        _check_backbone_init(node, init_cfg, checkpoint, f'{where}.init_cfg')
            stack.extend((f'{where}.{k}', v) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((f'{where}[{i}]', v) for i, v in enumerate(node))


def _check_backbone_init(node: dict, init_cfg: dict, checkpoint: dict, where: str) -> None:
    from .models import VanillaNet
    settings = {k: v for k, v in node.items() if k not in ('type', '_scope_', 'init_cfg')}
    with torch.device('meta'):
        backbone = VanillaNet(**settings)
    state_dict = checkpoint.get('state_dict', checkpoint)  # as mmengine's PretrainedInit takes it
    prefix = init_cfg.get('prefix')
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    try:
        backbone.load_state_dict(state_dict, strict=False, assign=True)
    except ValueError as e:  # VanillaNet's own checks: another arch or act_num, no weight at all
        raise ValueError(f'{where}: checkpoint {init_cfg["checkpoint"]} does not fit this VanillaNet: {e}') from None
    except RuntimeError as e:  # torch's: tensors of other shapes
        lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        raise ValueError(f'{where}: checkpoint {init_cfg["checkpoint"]} does not fit this VanillaNet: '
                         f'{"; ".join(lines)[:400]}. Give the checkpoint of this arch and act_num') from None


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


def train(cfg: Config, resume: str | bool | None = None, amp: bool = False, auto_scale_lr: bool = False,
          allow_nonfinite_loss: bool = False) -> Runner:
    """Trains with mmengine's runner. ``resume``: a checkpoint path, True for the newest complete one in the work
    dir (:func:`find_resume_checkpoint`), or None.

    Before anything is written: the model's settings (:func:`~mmvanilla.apis.check_model_builds`), the data
    (:func:`check_data`), pretrained weights (:func:`check_pretrained`) and the checkpoint to resume or start from
    (:func:`~mmvanilla.apis.check_checkpoint_fits`) are checked, and the work dir is taken for this run alone
    (:func:`~mmvanilla.work_dir.hold_work_dir`). A NaN or infinite loss stops training with one line
    (:class:`~mmvanilla.engine.NonFiniteLossHook`) unless ``allow_nonfinite_loss``. Stopped by Ctrl-C or SIGTERM at
    any moment (:mod:`mmvanilla.engine.interrupts`), it logs which checkpoint ``--resume`` will continue from and
    raises :class:`~mmvanilla.engine.interrupts.Interrupted`.
    """
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    check_work_dir_free(cfg.work_dir)
    check_training_config(cfg)
    check_model_builds(cfg)
    check_data(cfg, ('train', 'val'))
    check_pretrained(cfg)
    if resume:
        _resolve_resume(cfg, resume)
    elif cfg.get('load_from'):
        fit = check_checkpoint_fits(cfg, cfg.load_from, 'load_from')
        if not fit.fits:
            MMLogger.get_current_instance().warning(f'load_from {cfg.load_from}: {fit.summary()}: left out')
    use_cpu_distributed(cfg)
    with stop_on_signals(), hold_work_dir(cfg.work_dir):
        runner = AtomicCheckpointRunner.from_cfg(cfg)
        runner.register_hook(StopOnSignalHook())
        if not allow_nonfinite_loss:
            runner.register_hook(NonFiniteLossHook())
        try:
            with signal_takes_precedence(), _explained_run_errors(cfg.load_from if cfg.get('resume') else None):
                runner.train()
            raise_if_interrupted()  # a signal whose exception was lost after the last iteration
        except KeyboardInterrupt as e:
            found, _ = find_resume_checkpoint(cfg.work_dir)
            name = f' ({e.name})' if isinstance(e, Interrupted) else ''
            runner.logger.error(f'interrupted{name}: ' + (
                f'the newest complete checkpoint is {found}; continue with --resume' if found
                else 'no checkpoint was saved yet'))
            raise
        except NonFiniteLoss as e:
            found, _ = find_resume_checkpoint(cfg.work_dir)
            raise NonFiniteLoss(f'{e}; the newest complete checkpoint is ' + (found or 'none (none was saved yet)')
                                ) from None
    return runner


def test(cfg: Config, checkpoint: str, show_dir: str | None = None, metrics_out: str | None = None,
         force: bool = False) -> dict:
    """Evaluates ``checkpoint`` on the test split; returns the metrics with ``images/s`` and ``wall time (s)``.

    Checked first: the checkpoint fits the model and its weights are finite
    (:func:`~mmvanilla.apis.check_checkpoint_fits`), the data (:func:`check_data`), ``metrics_out`` (a new file, or
    ``force``), which is written whole, and ``show_dir`` (:func:`check_show_dir`).
    """
    if metrics_out:
        check_output(metrics_out, force, inputs=[checkpoint], what='metrics file')
    check_checkpoint_fits(cfg, checkpoint, 'evaluate')
    cfg.load_from = checkpoint
    if show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise KeyError('--show-dir needs a visualization hook in default_hooks (mmdet configs have one)')
        check_show_dir(cfg, show_dir, force)
        vis.update(draw=True, test_out_dir=show_dir, interval=vis.get('interval', 1))
    check_data(cfg, ('test',))
    use_cpu_distributed(cfg)
    with stop_on_signals():
        runner = AtomicCheckpointRunner.from_cfg(cfg)
        runner.register_hook(StopOnSignalHook())
        start = time.perf_counter()
        with signal_takes_precedence(), _explained_run_errors():
            metrics = dict(runner.test())
        raise_if_interrupted()
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
    exits with status 2; Ctrl-C (SIGINT) or SIGTERM, at any moment (:func:`~mmvanilla.engine.interrupts.
    stop_on_signals`), prints ``interrupted`` and exits with 130 or 143 (128 + the signal's number).

    Set ``MMVANILLA_DEBUG=1`` for the full traceback.
    """
    try:
        with stop_on_signals():
            yield
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        if os.environ.get('MMVANILLA_DEBUG'):
            raise
        if received_signal() is not None:  # an error that followed a signal (e.g. its workers ended by it)
            _exit_interrupted(Interrupted(received_signal()))
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        if os.environ.get('MMVANILLA_DEBUG'):
            raise
        _exit_interrupted(e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT))


def _exit_interrupted(interrupted: Interrupted) -> None:
    # The DataLoader workers may have ended of the same signal: PyTorch's SIGCHLD handler would report each, even
    # while Python exits.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print(f'interrupted ({interrupted.name})', file=sys.stderr)
    sys.exit(interrupted.exit_status)
