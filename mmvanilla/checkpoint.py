"""Checkpoint files: reading them with clear errors, the ``weights_only`` allowlist, saving, what they hold,
and the conversion of the paper's files.

:func:`read_checkpoint` is the one place a checkpoint file is read: an empty, truncated or foreign file, one that
pickles code, one in torch's legacy format, a TorchScript archive, or a pickle made to hang its loader is refused
with one line that names the file, the cause and what to do. :func:`save_checkpoint` writes whole files only
(temporary name, then rename). :func:`is_complete_checkpoint` tells cheaply whether a file was written whole.
:func:`describe_checkpoint`, :func:`state_dict_from_checkpoint` and :func:`is_deploy_checkpoint` say what a loaded
checkpoint holds; :func:`fit_of` how it fits a model (:func:`mmvanilla.apis.check_checkpoint_fits` builds the model
from a config). :func:`convert_checkpoint_file` reads a file of the paper's code and writes it in our names (the key
mapping itself is :mod:`mmvanilla.models.official`).

Safe loading (``weights_only``, asked for explicitly: torch < 2.6 does not default to it; on torch < 2.4, whose
allowlist is fixed, through :mod:`mmvanilla.weights_only`):

mmengine's runner checkpoints hold a few non-tensor objects (the message hub's ``HistoryBuffer`` and the numpy
arrays and scalars inside it). Rather than turning the check off, :func:`register_safe_globals` adds exactly these
types to torch's allowlist: resume and ``load_from`` work, and a file that pickles any other callable is refused.

The paper's training script (timm / ConvNeXt style) saves its ``argparse.Namespace`` of arguments next to the weights
(``args``); a Namespace only holds attributes, each of which must itself be allowed, so it is allowed too. It is
registered under its name, ``(Namespace, 'argparse.Namespace')``: timm loads files inside
``torch.serialization.safe_globals([Namespace])``, whose exit removes a plain ``Namespace`` entry from the list.

``HistoryBuffer`` pickles its statistic methods as ``getattr(HistoryBuffer, 'min')``. Allowing ``getattr`` itself
would allow anything, so the unpickler's ``getattr`` is mapped to :func:`history_buffer_getattr`, which resolves
only those methods.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import pickle
import re
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .models.official import convert_official_checkpoint
from .outputs import atomic_output, check_output, describe_missing
from .weights_only import ALLOWLIST_EXTENSIBLE, RefusedCheckpoint, load_weights_only

__all__ = ['CheckpointFit', 'check_finite', 'compare_keys', 'convert_checkpoint_file', 'describe_checkpoint', 'fit_of',
           'history_buffer_getattr', 'is_complete_checkpoint', 'is_deploy_checkpoint', 'read_checkpoint',
           'register_safe_globals', 'safe_globals', 'save_checkpoint', 'state_dict_from_checkpoint', 'weights_of']


def _numpy_safe_globals() -> list:
    multiarray = getattr(getattr(np, '_core', None), 'multiarray', None) or np.core.multiarray  # numpy 2, numpy 1
    dtype_classes = [type(np.dtype(name)) for name in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
        'float16', 'float32', 'float64')]
    return [
        # Checkpoints written under numpy 1.x name the module numpy.core.
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
        *dtype_classes,
    ]


_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` for the weights-only unpickler: resolves HistoryBuffer's statistic methods and nothing else."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: only HistoryBuffer statistics '
        f'{_HISTORY_BUFFER_STATISTICS} are allowed')


def safe_globals() -> list:
    """The types allowed in checkpoints besides torch's defaults."""
    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'), (argparse.Namespace, 'argparse.Namespace'),
            *_numpy_safe_globals()]


def register_safe_globals() -> None:
    """Adds :func:`safe_globals` to torch's ``weights_only`` allowlist (idempotent), where torch has one (>= 2.4);
    on an older torch, :func:`read_checkpoint` allows them itself (:mod:`mmvanilla.weights_only`)."""
    if ALLOWLIST_EXTENSIBLE:
        torch.serialization.add_safe_globals(safe_globals())


_ZIP_MAGIC = b'PK\x03\x04'
_REFUSED_GLOBAL = re.compile(r'GLOBAL ([\w.]+)')
_ANOTHER_CHECKPOINT = 'use a checkpoint written by mmengine\'s runner or torch.save (e.g. an earlier epoch_N.pth)'


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` was written whole, judged cheaply from its end: torch's zip format ends with a directory of
    its entries, which a save cut short never wrote. Files in torch's legacy (non-zip) format count as complete:
    :func:`read_checkpoint` refuses them, saying why.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + '/whole.pth'
        >>> torch.save({'w': torch.ones(2)}, path)
        >>> is_complete_checkpoint(path)
        True
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            return False
        with open(path, 'rb') as f:
            zipped = f.read(4) == _ZIP_MAGIC
    except OSError:
        return False
    return zipfile.is_zipfile(path) if zipped else True


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The dict a checkpoint file holds (on the CPU, loaded with ``weights_only``), with errors that name the file.

    Args:
        path (str | os.PathLike): The file.

    Returns:
        dict: What the file holds.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated, not a PyTorch checkpoint dict, or pickles something other than
            tensors and training state (refused: loading it could run code); or it is in torch's legacy format, a
            TorchScript archive, or a pickle too large or too deep to load
            (:func:`~mmvanilla.weights_only.check_checkpoint_file`).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(describe_missing(path, 'checkpoint'))
    if osp.getsize(path) == 0:
        raise ValueError(f'checkpoint {path} is empty (0 bytes): its saving was cut short, or it is not a '
                         f'checkpoint; {_ANOTHER_CHECKPOINT}')
    if not is_complete_checkpoint(path):
        raise ValueError(f'checkpoint {path} is incomplete (the end of its zip archive is missing): its saving was '
                         f'cut short or the copy is partial; {_ANOTHER_CHECKPOINT}')
    try:
        checkpoint = load_weights_only(path, safe_globals())
    except RefusedCheckpoint as e:
        raise ValueError(f'{e}; {_ANOTHER_CHECKPOINT}') from None
    except pickle.UnpicklingError as e:
        refused = _REFUSED_GLOBAL.search(str(e))
        if refused:
            raise ValueError(
                f'refused to load checkpoint {path}: it pickles {refused.group(1)}, which is neither a tensor nor '
                'training state; loading it could run code. Do not load this file; '
                f'{_ANOTHER_CHECKPOINT}') from None
        cause = _weights_unpickler_cause(str(e))
        raise ValueError(f'{path} is not a PyTorch checkpoint ({cause}); {_ANOTHER_CHECKPOINT}') from None
    except Exception as e:  # noqa: BLE001  torch's other errors (EOFError, KeyError, RuntimeError) name no file
        first = str(e).splitlines()[0][:200] if str(e) else ''
        raise ValueError(f'{path} is not a PyTorch checkpoint ({type(e).__name__}{": " + first if first else ""}); '
                         f'{_ANOTHER_CHECKPOINT}') from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict; {_ANOTHER_CHECKPOINT}')
    return checkpoint


def _weights_unpickler_cause(message: str) -> str:
    # torch's message opens with advice to turn the check off; keep only what was wrong with the file.
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if 'WeightsUnpickler error' in line:
            rest = line.split('WeightsUnpickler error:')[-1].strip() or (lines[i + 1] if i + 1 < len(lines) else '')
            return f'unreadable pickle: {rest}'
    return 'unreadable pickle'


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name beside ``path``, then renamed: ``path`` is never half written."""
    with atomic_output(path) as tmp:
        torch.save(checkpoint, tmp)


def state_dict_from_checkpoint(checkpoint: dict, use_ema: bool = True) -> tuple[dict, str]:
    """The model weights of an mmengine checkpoint: the EMA ones when present and ``use_ema``, else the trained ones;
    without the ``module.`` prefix of a model saved inside DDP (as mmengine's ``load_checkpoint`` strips it).

    mmengine's ``EMAHook`` saves the averaged weights as ``state_dict`` (so that they deploy as they are) and the
    trained ones, swapped out, under ``module.`` in ``ema_state_dict``.
    """
    if 'state_dict' not in checkpoint:
        state_dict, source = checkpoint, 'the file itself'
    elif not checkpoint.get('ema_state_dict'):
        state_dict, source = checkpoint['state_dict'], 'state_dict'
    elif use_ema:
        state_dict, source = checkpoint['state_dict'], 'EMA weights (state_dict)'
    else:
        state_dict, source = ({k[len('module.'):]: v for k, v in checkpoint['ema_state_dict'].items()
                               if k.startswith('module.')}, 'trained weights (ema_state_dict)')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}, source


def weights_of(checkpoint: dict) -> dict:
    """The model weights mmengine's ``load_checkpoint`` takes from a checkpoint: those of
    :func:`state_dict_from_checkpoint` (the EMA ones when ``EMAHook`` saved them)."""
    return state_dict_from_checkpoint(checkpoint)[0]


def check_finite(state_dict: dict, path: str) -> None:
    """Refuses weights that hold NaN or infinite values, naming the first such tensor: a model that diverged in
    training gives no detections and no metric worth reporting, and converts or exports to garbage.

    Raises:
        ValueError: a floating-point tensor of ``state_dict`` is not finite.
    """
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            kind = 'NaN' if bool(torch.isnan(value).any()) else 'infinite values'
            raise ValueError(f'{path}: its weight {key} holds {kind} ({bad} of {value.numel()} values): the '
                             'training that wrote it diverged. Use a checkpoint from before (--resume takes the '
                             'newest complete one), or train again with a lower learning rate')


_KINDS = (  # (key that shows it, what the checkpoint is), most specific first
    ('roi_head.mask_head.', 'a two-stage detector with a mask head, like Mask R-CNN'),
    ('roi_head.', 'a two-stage detector, like Faster R-CNN'),
    ('bbox_head.retina_cls.', 'a RetinaNet'),
    ('bbox_head.', 'a single-stage detector'),
    ('network.head.', 'an image classifier'),
    ('head.fc.', 'an image classifier'),
)


def describe_checkpoint(checkpoint: dict) -> str:
    """What a checkpoint holds, in words, from its keys and meta: e.g. ``a RetinaNet (trained as
    retinanet_vanillanet_tiny_synthetic; weights under backbone, bbox_head, neck)``."""
    state_dict = weights_of(checkpoint)
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        return f'no model weights (its keys: {", ".join(sorted(map(str, checkpoint))[:8])})'
    kind = next((what for key, what in _KINDS if any(k.startswith(key) for k in state_dict)), None)
    if kind is None:
        kind = 'a bare backbone' if all(k.startswith('backbone.') for k in state_dict) else 'a model'
    notes = []
    name = str((checkpoint.get('meta') or {}).get('experiment_name') or '')
    if name:
        notes.append('trained as ' + re.sub(r'_\d{8}_\d{6}$', '', name))  # the runner's timestamp suffix
    notes.append('weights under ' + ', '.join(sorted({k.split('.')[0] for k in state_dict})))
    return f'{kind} ({"; ".join(notes)})'


class CheckpointFit(dict):
    """What loading a checkpoint into a model would meet: ``missing`` (model weights the checkpoint lacks),
    ``unexpected`` (checkpoint weights the model has no place for) and ``mismatched`` (``'key: shape vs shape'``)."""

    @property
    def fits(self) -> bool:
        return not (self['missing'] or self['unexpected'] or self['mismatched'])

    def summary(self, limit: int = 3) -> str:
        """E.g. ``19 model weights missing from it (e.g. neck.fpn_convs.4.conv.weight, bbox_head.retina_cls.weight)``:
        the examples come from as many different top-level modules as there are, up to ``limit``."""
        parts = []
        for name, what in (('missing', 'model {} missing from it'), ('unexpected', '{} the model has no place for'),
                           ('mismatched', '{} of another shape')):
            keys = self[name]
            what = what.format('weight' if len(keys) == 1 else 'weights')
            if keys:
                first_per_module = {}
                for key in keys:
                    first_per_module.setdefault(key.split('.')[0], key)
                examples = [*first_per_module.values(), *(k for k in keys if k not in first_per_module.values())]
                examples = examples[:limit]
                parts.append(f'{len(keys)} {what} (e.g. {", ".join(examples)})')
        return '; '.join(parts)


def fit_of(model: torch.nn.Module, state_dict: dict) -> CheckpointFit:
    """Loads ``state_dict`` into ``model`` (built on the meta device: nothing is copied) and records the misfits.

    Used by :func:`mmvanilla.apis.check_checkpoint_fits`, which builds the model from a config.

    Runs the model's own load hooks, so VanillaNet's checks (act_num, arch, training vs deploy form) raise their
    messages and the paper's key layout is renamed as in a real load.
    """
    mismatched = []
    try:
        result = model.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as e:
        mismatched = [f'{m.group(1)}: {m.group(2)} vs {m.group(3)}' for m in re.finditer(
            r'size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, '
            r'the shape in current model is torch\.Size\((\[[^\]]*\])\)', str(e))]
        if not mismatched:
            raise
        shapes = {k.split(':')[0] for k in mismatched}
        result = model.load_state_dict({k: v for k, v in state_dict.items() if k not in shapes}, strict=False,
                                       assign=True)
        missing = [k for k in result.missing_keys if k not in shapes]
        return CheckpointFit(missing=missing, unexpected=list(result.unexpected_keys), mismatched=mismatched)
    return CheckpointFit(missing=list(result.missing_keys), unexpected=list(result.unexpected_keys),
                         mismatched=mismatched)


def is_deploy_checkpoint(checkpoint: dict, state_dict: dict, path: str) -> bool:
    """Whether a checkpoint holds a deploy-form model (its meta says so, or its layers are merged ``conv`` ones).

    Raises:
        ValueError: ``state_dict`` holds no VanillaNet layer at all (``path`` names the file in the message).
    """
    if checkpoint.get('meta', {}).get('deploy'):
        return True
    if any(k.endswith('layer.conv1.conv.weight') for k in state_dict):
        return False
    if any(k.endswith('layer.conv.weight') for k in state_dict):
        return True
    raise ValueError(f'{path} holds no VanillaNet layer weights (no keys like backbone.stem.layer.conv1.conv.weight '
                     'or backbone.stem.layer.conv.weight): is it a checkpoint of this config? A checkpoint of the '
                     'paper\'s code needs tools/convert_checkpoint.py first.')


def compare_keys(state_dict: Mapping, model: torch.nn.Module) -> dict:
    """What a strict ``model.load_state_dict(state_dict)`` would complain about: ``missing``, ``unexpected`` and
    ``mismatched`` (``'key: checkpoint shape vs model shape'``) keys; all empty when it loads."""
    own = model.state_dict()
    return dict(missing=[k for k in own if k not in state_dict],
                unexpected=[k for k in state_dict if k not in own],
                mismatched=[f'{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}' for k, v in state_dict.items()
                            if k in own and tuple(v.shape) != tuple(own[k].shape)])


def convert_checkpoint_file(src: str, dst: str, model: torch.nn.Module | None = None, use_ema: bool = True,
                            force: bool = False) -> dict:
    """Converts the paper's checkpoint file ``src`` (:func:`~mmvanilla.models.official.convert_official_checkpoint`)
    and saves it as ``dst``.

    Args:
        src (str): The paper's checkpoint (an mmdet 2.x detector or an ImageNet classifier).
        dst (str): Where to write the converted checkpoint.
        model (torch.nn.Module | None): If given, the converted keys are compared with its own
            (:func:`compare_keys`); it may live on the meta device (no memory, no weights). Defaults to None.
        use_ema (bool): Prefer ``model_ema`` over ``model``. Defaults to True.
        force (bool): Replace ``dst`` if it exists (never ``src``). Defaults to False.

    Returns:
        dict: The report of :func:`~mmvanilla.models.official.convert_official_checkpoint`, with ``missing``,
        ``unexpected`` and ``mismatched`` when ``model`` is given.

    Raises:
        FileNotFoundError, ValueError: ``src`` cannot be read (:func:`read_checkpoint`), or ``dst`` cannot or may
            not be written (:func:`~mmvanilla.outputs.check_output`); nothing is written.
    """
    check_output(dst, force, inputs=[src], what='converted checkpoint')
    checkpoint = read_checkpoint(src)
    converted, report = convert_official_checkpoint(checkpoint, use_ema)
    converted['meta']['converted_from'] = str(src)
    if model is not None:
        report.update(compare_keys(converted['state_dict'], model))
    save_checkpoint(converted, dst)
    return report
