"""Building models from configs and loading checkpoints into them, as ``mmdet.apis.init_detector`` does.

:func:`init_model` is the one call for users: a config (file or :class:`~mmengine.config.Config`) and optionally a
checkpoint in, a model in eval mode out. :func:`build_model` builds without weights, :func:`load_model` loads a
checkpoint in whichever form (training or deploy) it holds, and :func:`check_checkpoint_fits` compares a checkpoint
with a config's model before a run, without building any weights. Files are read through :mod:`mmvanilla.checkpoint`.
:func:`with_vanillanet` puts a VanillaNet into any mmdet detector's config, its neck's inputs set to match.
"""
from __future__ import annotations

import copy
import os
import re
from typing import NamedTuple

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from torch import nn

from .checkpoint import (CheckpointFit, check_finite, describe_checkpoint, fit_of, is_deploy_checkpoint,
                         read_checkpoint, state_dict_from_checkpoint, weights_of)

__all__ = ['LoadedModel', 'build_model', 'check_checkpoint_fits', 'check_model_builds', 'init_model', 'load_model',
           'with_vanillanet']


def build_model(cfg: Config, deploy: bool = False) -> nn.Module:
    """Builds ``cfg.model`` in its registry scope, without pretrained initialization.

    Args:
        cfg (Config): The config.
        deploy (bool): Build the VanillaNet part (a detector's ``backbone``, an ``ImageClassifier``'s ``network``,
            or the model itself) in deploy form. Defaults to False.

    Returns:
        nn.Module: The model, in training mode, with freshly initialized weights.
    """
    cfg = copy.deepcopy(cfg)
    if deploy:
        part = next((cfg.model[key] for key in ('backbone', 'network') if key in cfg.model), cfg.model)
        part.deploy = True
    if DefaultScope.get_current_instance() is None:
        init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


_REGISTRY_PREFIX = re.compile(r'class `(\w+)` in [^:]+: ')


def check_model_builds(cfg: Config) -> None:
    """Builds ``cfg.model`` on the meta device (no memory, no weights), so that a setting the model refuses is
    named in one line before a run writes anything (mmengine's runner builds the model after creating its work
    dir, log and config dump).

    Raises:
        ValueError: the model cannot be built from these settings; the message is the innermost class's, with the
            class named.
    """
    try:
        with torch.device('meta'):
            build_model(cfg)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        classes = _REGISTRY_PREFIX.findall(text)
        inner = _REGISTRY_PREFIX.sub('', text).strip() or type(e).__name__
        where = f'{classes[-1]}: ' if classes and not inner.startswith(classes[-1]) else ''
        raise ValueError(f'the model cannot be built from the config: {where}{inner}; fix that setting in the config '
                         'or with --cfg-options') from None


class LoadedModel(NamedTuple):
    """What :func:`load_model` gives: the model (eval mode), which weights were loaded (e.g. ``'EMA weights
    (state_dict)'``), whether the checkpoint is in deploy form, and the checkpoint's ``meta``."""
    model: nn.Module
    source: str
    deploy: bool
    meta: dict


def _load(cfg: Config, checkpoint: dict, path: str, use_ema: bool) -> LoadedModel:
    state_dict, source = state_dict_from_checkpoint(checkpoint, use_ema)
    check_finite(state_dict, path)
    deploy = is_deploy_checkpoint(checkpoint, state_dict, path)
    model = build_model(cfg, deploy=deploy)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise ValueError(f'{path} ({source}, {"deploy" if deploy else "training"} form) does not fit the '
                         f'config\'s {type(model).__name__}: it holds {describe_checkpoint(checkpoint)}; '
                         f'{" ".join(line.strip() for line in lines[:3])[:400]} ... Use the config the checkpoint '
                         'was trained with.') from None
    return LoadedModel(model.eval(), source, deploy, dict(checkpoint.get('meta') or {}))


def load_model(cfg: Config, checkpoint: str | os.PathLike, use_ema: bool = True) -> LoadedModel:
    """Builds ``cfg.model`` in the form of ``checkpoint`` (training or deploy) and loads it strictly.

    Args:
        cfg (Config): The config.
        checkpoint (str | os.PathLike): A runner checkpoint (training form) or one written by
            tools/reparameterize.py (deploy form).
        use_ema (bool): Load the EMA weights when the checkpoint has them. Defaults to True.

    Returns:
        LoadedModel: The model (eval mode, on the CPU), which weights were loaded, the checkpoint's form and meta.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint, or not one of this config.
    """
    path = os.fspath(checkpoint)
    return _load(cfg, read_checkpoint(path), path, use_ema)


def init_model(config: str | os.PathLike | Config, checkpoint: str | os.PathLike | None = None,
               device: str | torch.device = 'cpu', deploy: bool | None = None, use_ema: bool = True,
               cfg_options: dict | None = None) -> nn.Module:
    """A model from a config, with a checkpoint's weights if given, in eval mode on ``device``.

    Args:
        config (str | os.PathLike | Config): A config file or a loaded config.
        checkpoint (str | os.PathLike | None): A checkpoint of this config, in training form (a runner's) or deploy
            form (tools/reparameterize.py). None: freshly initialized weights. Defaults to None.
        device (str | torch.device): Where the model goes. Defaults to ``'cpu'``.
        deploy (bool | None): The form wanted. None: the checkpoint's form (training form without a checkpoint);
            True or False: that form, and a checkpoint in the other form is refused. Defaults to None.
        use_ema (bool): Load the EMA weights when the checkpoint has them. Defaults to True.
        cfg_options (dict | None): Config entries to override, as ``--cfg-options`` does. Defaults to None.

    Returns:
        nn.Module: The model, with its config as ``model.cfg``.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_model`; also a checkpoint in the form ``deploy`` refuses.

    Example:
        >>> model = init_model('configs/vanillanet_tiny_synthetic_cls.py', deploy=True)
        >>> type(model).__name__, model.network.backbone.deploy, model.training
        ('ImageClassifier', True, False)
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(os.fspath(config))
    cfg = copy.deepcopy(cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if checkpoint is None:
        model = build_model(cfg, deploy=bool(deploy)).eval()
    else:
        loaded = load_model(cfg, checkpoint, use_ema)
        if deploy is not None and loaded.deploy != deploy:
            fix = ('convert it with tools/reparameterize.py (or call mmvanilla.deploy.switch_to_deploy on the '
                   'model loaded with deploy=None)' if deploy else 'a deploy-form model cannot return to training '
                   'form: load the training checkpoint it was converted from')
            raise ValueError(f'{os.fspath(checkpoint)} is in {"deploy" if loaded.deploy else "training"} form, '
                             f'not in the {"deploy" if deploy else "training"} form asked for: {fix}')
        model = loaded.model
    model.cfg = cfg
    return model.to(device)


_PURPOSES = {'evaluate': 'To evaluate', 'resume': 'To resume', 'load_from': 'For load_from'}


def check_checkpoint_fits(cfg: Config, path: str, purpose: str = 'evaluate') -> CheckpointFit:
    """Refuses, before any work, a checkpoint that does not fit the model ``cfg`` builds.

    The model is built on the meta device (no memory, no weights) and the checkpoint loaded into it with the model's
    own load hooks, so VanillaNet's checks (another arch, act_num, training vs deploy form) raise their messages.

    Args:
        cfg (Config): The config.
        path (str): The checkpoint.
        purpose (str): ``'evaluate'`` or ``'resume'``: every weight must fit. ``'load_from'`` (fine-tuning): the
            checkpoint must give every model weight; extra weights and weights of another shape (a head with
            another number of classes) are left out by mmengine and only listed here. Defaults to ``'evaluate'``.

    Returns:
        CheckpointFit: How it fits (for ``'load_from'``, what mmengine will leave out).

    Raises:
        FileNotFoundError, ValueError: as :func:`~mmvanilla.checkpoint.read_checkpoint`; a checkpoint that does not
            fit.
    """
    checkpoint = read_checkpoint(path)
    weights = weights_of(checkpoint)
    check_finite(weights, path)
    with torch.device('meta'):
        model = build_model(cfg)
    try:
        fit = fit_of(model, dict(weights))
    except ValueError as e:  # VanillaNet's own check: another arch, act_num or form
        raise ValueError(f'{path} does not fit the config: {e}') from None
    refused = not fit.fits if purpose != 'load_from' else bool(fit['missing'])
    if refused:
        if purpose == 'load_from':
            fix = ('give load_from a checkpoint of this whole model; for backbone weights alone use '
                   'model.backbone.init_cfg=dict(type=\'Pretrained\', checkpoint=PATH)')
        else:
            fix = 'use the checkpoint trained with this config, or the config it was trained with'
        raise ValueError(f'{path} does not fit the config\'s {type(model).__name__}: it holds '
                         f'{describe_checkpoint(checkpoint)}; {fit.summary()}. {_PURPOSES[purpose]}, {fix}')
    return fit


def with_vanillanet(config: str | os.PathLike | Config, arch: str | dict = '5',
                    out_indices: tuple[int, ...] | None = None, **backbone: object) -> Config:
    """A detector's config with a VanillaNet as its backbone, and its neck's inputs set to the backbone's outputs.

    Works with mmdet 3.x's own configs (``'mmdet::...'``): the backbone is replaced whole (its ``init_cfg`` too),
    and the neck's ``in_channels`` (FPN, PAFPN, ChannelMapper of DETR-like detectors, CSPNeXtPAFPN of RTMDet,
    YOLOXPAFPN ...; the first of a list of necks) become ``backbone.out_channels``, so no channel list is copied by
    hand. Everything else, ``num_outs`` included, stays as the config has it.

    Args:
        config (str | os.PathLike | Config): The detector's config, or its file (``'mmdet::...'`` too).
        arch (str | dict): The VanillaNet variant (``'5'`` ... ``'13'``, ...) or a custom arch dict. Defaults to
            ``'5'``.
        out_indices (tuple[int, ...] | None): The backbone's output stages (stage i has stride 4 * 2**i). None:
            as many of its last stages as the neck takes inputs (strides 8, 16, 32 for three, 4 ... 32 for four),
            which are the strides mmdet's ResNet and CSPNeXt configs feed their necks. Defaults to None.
        **backbone: Other ``VanillaNet`` arguments, e.g. ``act_num=4``, ``act_lambda=1.0``, ``init_cfg``.

    Returns:
        Config: A new config; ``config`` is not changed.

    Raises:
        ValueError: the model has no neck whose inputs can be matched and ``out_indices`` is not given, or the
            neck takes more inputs than the VanillaNet has stages.

    Example:
        >>> cfg = with_vanillanet('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', arch='13', act_num=4)
        >>> cfg.model.backbone.type, cfg.model.backbone.out_indices, cfg.model.neck.in_channels
        ('VanillaNet', (0, 1, 2, 3), [512, 1024, 2048, 4096])
    """
    from mmengine.hub import get_config

    from .models.vanillanet import VanillaNet
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:  # a file, or a packaged config ('mmdet::...'), which Config.fromfile does not take
        config = os.fspath(config)
        cfg = get_config(config) if '::' in config else Config.fromfile(config)
    model = cfg.model
    neck = model.get('neck')
    neck = neck[0] if isinstance(neck, (list, tuple)) and neck else neck
    inputs = neck.get('in_channels') if isinstance(neck, dict) else None
    with torch.device('meta'):  # the stages' channels only: no weights are made
        stages = VanillaNet(arch, out_indices=(0,), **backbone).num_stages
    if out_indices is None:
        if isinstance(inputs, (list, tuple)):
            wanted = len(inputs)
        elif isinstance(inputs, int):
            wanted = 1
        else:
            raise ValueError(f'{type(model).__name__ if not isinstance(model, dict) else model.get("type")} has no '
                             'neck with in_channels to match: give out_indices')
        if wanted > stages:
            raise ValueError(f'the neck takes {wanted} inputs but this VanillaNet has {stages} stages: give '
                             'out_indices, or a neck with fewer inputs')
        out_indices = tuple(range(stages - wanted, stages))
    out_indices = tuple(out_indices)
    with torch.device('meta'):
        out_channels = list(VanillaNet(arch, out_indices=out_indices, **backbone).out_channels)
    model.backbone = dict(type='VanillaNet', arch=arch, out_indices=out_indices, **backbone)
    if isinstance(inputs, (list, tuple)):
        neck.in_channels = out_channels
    elif isinstance(inputs, int):
        if len(out_channels) != 1:
            raise ValueError(f'the neck ({neck.get("type")}) takes one input of {inputs} channels, but out_indices '
                             f'{out_indices} gives {len(out_channels)}: give one stage')
        neck.in_channels = out_channels[0]
    return cfg
