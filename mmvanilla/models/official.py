"""The paper's published checkpoints (Chen et al. 2023, github.com/huawei-noah/VanillaNet) in mmvanilla's layout.

The paper's code names its layers differently: ``stem1``/``stem2``/``stages.{i}``/``cls1``/``cls2`` in the training
form, ``stem``/``stages.{i}``/``cls`` in the deploy form. Its ImageNet checkpoints are ``{'model': ...,
'model_ema': ...}``; its mmdet 2.x detection checkpoints hold ``state_dict`` with those backbone names under
``backbone.``. :data:`OFFICIAL_KEY_RULES` is the one table that renames them; everything else here applies it:

- :func:`adapt_official_state_dict` runs inside ``VanillaNet`` and ``VanillaNetClassifier`` loading, so the paper's
  files load as they are (``init_cfg=dict(type='Pretrained', checkpoint=PATH)``, ``load_checkpoint``,
  ``load_state_dict``, timm's ``pretrained=True``), EMA weights first;
- :func:`convert_official_checkpoint` maps a whole loaded checkpoint into our names, e.g. an mmdet 2.x detector for
  mmdet 3.x's ``load_from``; :func:`mmvanilla.checkpoint.convert_checkpoint_file` (``tools/convert_checkpoint.py``)
  reads and writes the files.

Pure mapping: nothing here reads or writes files or builds models.

The paper's code keeps lambda (its ``act_learn``) out of the state dict and ends training at 1, so a training-form
official checkpoint loads with lambda = 1, ready to fine-tune or re-parameterize.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch
from mmengine.logging import MMLogger

TRAINING, DEPLOY, BOTH = 'training', 'deploy', 'both'
_BN = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_CONV = r'(weight|bias)'

# The one table: (form, official key, our key relative to VanillaNetClassifier). A form of BOTH names keys that
# the two forms share. Detection backbones have the same keys without cls*.
OFFICIAL_KEY_RULES: tuple[tuple[str, str, str], ...] = (
    (TRAINING, rf'stem1\.0\.{_CONV}', r'backbone.stem.layer.conv1.conv.\1'),
    (TRAINING, rf'stem1\.1\.{_BN}', r'backbone.stem.layer.conv1.bn.\1'),
    (TRAINING, rf'stem2\.0\.{_CONV}', r'backbone.stem.layer.conv2.conv.\1'),
    (TRAINING, rf'stem2\.1\.{_BN}', r'backbone.stem.layer.conv2.bn.\1'),
    (TRAINING, r'stem2\.2\.weight', r'backbone.stem.act.conv.weight'),
    (TRAINING, rf'stem2\.2\.bn\.{_BN}', r'backbone.stem.act.bn.\1'),
    (TRAINING, rf'stages\.(\d+)\.conv1\.0\.{_CONV}', r'backbone.blocks.\1.layer.conv1.conv.\2'),
    (TRAINING, rf'stages\.(\d+)\.conv1\.1\.{_BN}', r'backbone.blocks.\1.layer.conv1.bn.\2'),
    (TRAINING, rf'stages\.(\d+)\.conv2\.0\.{_CONV}', r'backbone.blocks.\1.layer.conv2.conv.\2'),
    (TRAINING, rf'stages\.(\d+)\.conv2\.1\.{_BN}', r'backbone.blocks.\1.layer.conv2.bn.\2'),
    (BOTH, r'stages\.(\d+)\.act\.weight', r'backbone.blocks.\1.act.conv.weight'),
    (TRAINING, rf'stages\.(\d+)\.act\.bn\.{_BN}', r'backbone.blocks.\1.act.bn.\2'),
    (TRAINING, rf'cls1\.2\.{_CONV}', r'head.fc.conv1.conv.\1'),
    (TRAINING, rf'cls1\.3\.{_BN}', r'head.fc.conv1.bn.\1'),
    (TRAINING, rf'cls2\.0\.{_CONV}', r'head.fc.conv2.conv.\1'),
    (DEPLOY, rf'stem\.0\.{_CONV}', r'backbone.stem.layer.conv.\1'),
    (DEPLOY, rf'stem\.1\.{_CONV}', r'backbone.stem.act.conv.\1'),
    (DEPLOY, rf'stages\.(\d+)\.conv\.{_CONV}', r'backbone.blocks.\1.layer.conv.\2'),
    (DEPLOY, r'stages\.(\d+)\.act\.bias', r'backbone.blocks.\1.act.conv.bias'),
    (DEPLOY, rf'cls\.2\.{_CONV}', r'head.fc.conv.\1'),
)
_RULES = [(form, re.compile(pattern), target) for form, pattern, target in OFFICIAL_KEY_RULES]
# Any key under one of the paper's module names, mapped or not (ours are stem.layer/stem.act, blocks, head).
_OFFICIAL_KEY = re.compile(r'(stem1|stem2|stem\.\d+|stages\.\d+|cls1|cls2|cls\.\d+)\.')
_HEAD = 'head.'
_BACKBONE = 'backbone.'


class OfficialWeights(NamedTuple):
    """The result of :func:`map_official_keys`."""
    state_dict: dict  #: tensors under our names, relative to ``VanillaNetClassifier``
    form: str  #: ``'training'`` or ``'deploy'``
    unmapped: list  #: official-looking keys that no rule matched, left out of ``state_dict``


def is_official_key(key: str) -> bool:
    """Whether ``key`` (relative to the paper's model) lies under one of the paper's module names."""
    return _OFFICIAL_KEY.match(key) is not None


def _rename(key: str) -> tuple[str, str] | None:
    for form, pattern, target in _RULES:
        match = pattern.fullmatch(key)
        if match:
            return form, match.expand(target)
    return None


def official_form(keys: Iterable[str]) -> str | None:
    """The form of a state dict in the paper's layout: ``'training'``, ``'deploy'``, or None if not one.

    Raises:
        ValueError: the keys mix both forms.
    """
    forms = {renamed[0] for renamed in map(_rename, keys) if renamed is not None} - {BOTH}
    if len(forms) > 1:
        raise ValueError('the checkpoint mixes keys of the training form (stem1, stages.N.conv1, cls1) and of the '
                         'deploy form (stem.0, stages.N.conv, cls.2): it is not one of the paper\'s checkpoints')
    return forms.pop() if forms else None


def map_official_keys(state_dict: Mapping[str, torch.Tensor]) -> OfficialWeights:
    """Renames a state dict in the paper's layout to ours, with :data:`OFFICIAL_KEY_RULES`.

    Pure: ``state_dict`` is not modified and tensors are not copied. In the training form, each deep-training layer
    also gets ``act_lambda`` = 1, the value the paper's training ends with (it saves none).

    Args:
        state_dict (Mapping[str, Tensor]): Keys of the paper's ``VanillaNet`` (``stem1.0.weight``, ...).

    Returns:
        OfficialWeights: Our keys relative to ``VanillaNetClassifier`` (``backbone.*``, ``head.*``), the form, and
        the keys no rule matched.

    Example:
        >>> weights = map_official_keys({'stem.0.weight': torch.zeros(8, 3, 4, 4), 'stem.0.bias': torch.zeros(8)})
        >>> weights.form, list(weights.state_dict)
        ('deploy', ['backbone.stem.layer.conv.weight', 'backbone.stem.layer.conv.bias'])
    """
    form = official_form(state_dict)
    if form is None:
        raise ValueError('no key of the paper\'s VanillaNet layout (stem1.* for the training form, stem.0.* for the '
                         'deploy form)')
    mapped, unmapped = {}, []
    for key, value in state_dict.items():
        renamed = _rename(key)
        if renamed is None:
            unmapped.append(key)
        else:
            mapped[renamed[1]] = value
    if form == TRAINING:
        suffix = 'conv1.conv.weight'
        for key in [k for k in mapped if k.endswith('.' + suffix)]:
            mapped[key[:-len(suffix)] + 'act_lambda'] = torch.ones(1)
    return OfficialWeights(mapped, form, unmapped)


def select_weights(checkpoint: Mapping, use_ema: bool = True) -> tuple[Mapping, str]:
    """The weights of a loaded checkpoint: ``model_ema`` (if ``use_ema``), else ``model``, else ``state_dict``.

    Returns:
        tuple[Mapping, str]: The state dict and the key it came from (``'the file itself'`` for a bare state dict).
    """
    keys = (['model_ema'] if use_ema else []) + ['model', 'state_dict']
    for key in keys:
        value = checkpoint.get(key)
        if isinstance(value, Mapping) and value:
            return value, key
    return checkpoint, 'the file itself'


def check_checkpoint_form(state_dict: Mapping, prefix: str, deploy: bool) -> None:
    """Refuses a training-form checkpoint for a deploy-form backbone at ``prefix``, and the reverse, by name."""
    has_training = prefix + 'stem.layer.conv1.conv.weight' in state_dict
    has_deploy = prefix + 'stem.layer.conv.weight' in state_dict
    if deploy and has_training:
        raise ValueError(
            'the checkpoint is in training form (two convolutions and BatchNorms per layer) but the model was built '
            'with deploy=True: build it with deploy=False, load, then call switch_to_deploy() (or convert the file '
            'with tools/reparameterize.py)')
    if not deploy and has_deploy:
        raise ValueError(
            'the checkpoint is in deploy form (re-parameterized: one convolution per layer) but the model is in '
            'training form: build it with deploy=True (e.g. --cfg-options model.backbone.deploy=True)')


def adapt_official_state_dict(state_dict: dict, prefix: str = '', keep_head: bool = False,
                              deploy: bool | None = None) -> None:
    """Prepares, in place, a state dict being loaded into a VanillaNet module at ``prefix``.

    Called at the start of ``_load_from_state_dict``, before any tensor is copied:

    1. at the root of the load (``prefix == ''``), a checkpoint with ``model``/``model_ema`` entries is replaced by
       its EMA weights if present, else its model weights;
    2. keys in the paper's layout under ``prefix`` are renamed to ours (:func:`map_official_keys`); keys that no
       rule matches are kept (a strict load reports them) and logged;
    3. for a training-form module (``deploy=False``), a deploy-form checkpoint is refused (the reverse is refused
       by each deep-training layer, which names the checkpoint's lambda).

    Args:
        state_dict (dict): The state dict being loaded (modified in place).
        prefix (str): The module's prefix in it. Defaults to ``''``.
        keep_head (bool): True for a classifier (our keys ``backbone.*`` and ``head.*`` under ``prefix``); False
            for a backbone (keys directly under ``prefix``; the paper's classifier ``cls*`` is dropped).
            Defaults to False.
        deploy (bool | None): The module's form (step 3). Defaults to None (no check).
    """
    if not prefix and any(isinstance(state_dict.get(k), Mapping) for k in ('model', 'model_ema')):
        weights, source = select_weights(state_dict)
        chosen = "the EMA weights ('model_ema')" if source == 'model_ema' else \
            "the 'model' weights (there are no EMA ones)"
        MMLogger.get_current_instance().info(f'VanillaNet: loading {chosen} of the checkpoint')
        weights = dict(weights)
        state_dict.clear()
        state_dict.update(weights)

    official = {key[len(prefix):]: key for key in state_dict if key.startswith(prefix)
                and is_official_key(key[len(prefix):])}
    if official:
        mapped = map_official_keys({rest: state_dict[key] for rest, key in official.items()})
        for rest, key in official.items():
            if rest not in mapped.unmapped:
                del state_dict[key]
        for key, value in mapped.state_dict.items():
            if keep_head:
                state_dict[prefix + key] = value
            elif key.startswith(_BACKBONE):
                state_dict[prefix + key[len(_BACKBONE):]] = value
        logger = MMLogger.get_current_instance()
        dropped = 0 if keep_head else sum(rest.startswith('cls') for rest in official)
        note = ', lambda = 1 (where the paper\'s training ends)' if mapped.form == TRAINING else ''
        head = f'; ignored its {dropped} classifier tensors (cls*)' if dropped else ''
        logger.info(f'VanillaNet{" at " + prefix.rstrip(".") if prefix else ""}: renamed '
                    f'{len(official) - len(mapped.unmapped)} keys of the paper\'s {mapped.form}-form '
                    f'layout{note}{head}')
        if mapped.unmapped:
            logger.warning(f'VanillaNet: {len(mapped.unmapped)} keys of the paper\'s layout match no rule and are '
                           f'left as they are: {", ".join(prefix + k for k in mapped.unmapped)}')
    if deploy is False:
        check_checkpoint_form(state_dict, prefix + (_BACKBONE if keep_head else ''), deploy=False)


def convert_official_checkpoint(checkpoint: Mapping, use_ema: bool = True) -> tuple[dict, dict]:
    """Converts a loaded checkpoint of the paper's code into one in our names.

    An mmdet 2.x detector (``state_dict`` with ``backbone.stem1...``): the backbone is renamed, every other key
    (neck and heads, which mmdet 3.x names as 2.x did) is kept. An ImageNet classifier (``model``/``model_ema``):
    renamed to ``VanillaNetClassifier`` keys, EMA weights first.

    Args:
        checkpoint (Mapping): The loaded file.
        use_ema (bool): Prefer ``model_ema`` over ``model``. Defaults to True.

    Returns:
        tuple[dict, dict]: The new checkpoint (``meta`` and ``state_dict``), and a report with ``kind``
        (``'detector'`` or ``'classifier'``), ``form``, ``source`` (the key the weights came from), ``renamed``
        (count), ``kept`` (keys kept as they are), ``dropped`` and ``unmapped`` (keys it could not map).
    """
    weights, source = select_weights(checkpoint, use_ema)
    backbone = {k[len(_BACKBONE):]: v for k, v in weights.items() if k.startswith(_BACKBONE)}
    if backbone and official_form(backbone) is not None:
        kind = 'detector'
        mapped = map_official_keys(backbone)
        state_dict = {k: v for k, v in mapped.state_dict.items() if k.startswith(_BACKBONE)}
        dropped = [k for k in mapped.state_dict if not k.startswith(_BACKBONE)]
        unmapped = [_BACKBONE + k for k in mapped.unmapped]
        kept = [k for k in weights if not k.startswith(_BACKBONE)]
        state_dict.update({k: weights[k] for k in kept})
    elif official_form(weights) is not None:
        kind = 'classifier'
        mapped = map_official_keys(weights)
        state_dict, dropped, kept = dict(mapped.state_dict), [], []
        unmapped = list(mapped.unmapped)
    else:
        raise ValueError(f'{source} of this checkpoint has no VanillaNet key in the paper\'s layout (stem1.* or '
                         'stem.0.*, or backbone.stem1.* for a detector); is it already converted?')
    meta = dict(converted_from='the paper\'s code', kind=kind, form=mapped.form, weights=source)
    if mapped.form == TRAINING:
        meta['act_lambda'] = 1.0
    classes = (checkpoint.get('meta') or {}).get('CLASSES')
    if classes is not None:
        meta['dataset_meta'] = dict(classes=tuple(classes))
    renamed = (len(backbone) if kind == 'detector' else len(weights)) - len(unmapped)
    report = dict(kind=kind, form=mapped.form, source=source, renamed=renamed, kept=kept, dropped=dropped,
                  unmapped=unmapped)
    return dict(meta=meta, state_dict=state_dict), report
