"""Re-parameterization of whole models and of trained checkpoints (Chen et al. 2023, Sec. 3.2).

Works on any model that holds VanillaNet layers: a detector (its neck and heads are kept), a classifier, a bare
backbone. The conversion is exact only when deep training has finished (lambda = 1); otherwise it is refused.

:func:`optimize_for_inference` then swaps in faster CPU inference modules with the same outputs and state dict.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope, init_default_scope
from torch import nn

from .checkpoint import describe_checkpoint, read_checkpoint, save_checkpoint

from .models.layers import SeriesActivation
from .models.utils import act_lambda_modules, get_act_lambda
from .models.vanillanet import VanillaBlock
from .outputs import check_output


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Re-parameterizes every VanillaNet part of ``model`` in place and returns it.

    Raises:
        ValueError: the model has no VanillaNet layers.
        RuntimeError: lambda < 1 somewhere (nothing is changed then).
    """
    modules = act_lambda_modules(model)
    if not modules:
        raise ValueError(f'{type(model).__name__} has no VanillaNet layers to re-parameterize')
    lam = get_act_lambda(model)
    if lam != 1.0:
        raise RuntimeError(f'cannot re-parameterize at lambda={lam:g}: the merge is exact only at lambda=1. '
                           'Finish the deep-training schedule (DeepTrainingHook) first.')
    for module in modules:
        module.switch_to_deploy()
    return model


def state_dict_from_checkpoint(checkpoint: dict, use_ema: bool = True) -> tuple[dict, str]:
    """The model weights of an mmengine checkpoint: the EMA ones when present and ``use_ema``, else the trained ones.

    mmengine's ``EMAHook`` saves the averaged weights as ``state_dict`` (so that they deploy as they are) and the
    trained ones, swapped out, under ``module.`` in ``ema_state_dict``.
    """
    if 'state_dict' not in checkpoint:
        return checkpoint, 'the file itself'
    ema = checkpoint.get('ema_state_dict')
    if not ema:
        return checkpoint['state_dict'], 'state_dict'
    if use_ema:
        return checkpoint['state_dict'], 'EMA weights (state_dict)'
    return ({k[len('module.'):]: v for k, v in ema.items() if k.startswith('module.')},
            'trained weights (ema_state_dict)')


def build_model(cfg: Config, deploy: bool = False) -> nn.Module:
    """Builds ``cfg.model`` in its registry scope, without pretrained initialization."""
    cfg = copy.deepcopy(cfg)
    if deploy:
        # Detectors hold VanillaNet as their backbone, ImageClassifier its network; a bare VanillaNet* model itself.
        part = next((cfg.model[key] for key in ('backbone', 'network') if key in cfg.model), cfg.model)
        part.deploy = True
    scope = cfg.get('default_scope', 'mmdet')
    if DefaultScope.get_current_instance() is None:
        init_default_scope(scope)
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model)


def _features(model: nn.Module, x: torch.Tensor):
    out = model.extract_feat(x) if hasattr(model, 'extract_feat') else model(x)
    return out if isinstance(out, (tuple, list)) else (out,)


#: The fix for a checkpoint saved before deep training reached lambda = 1.
LAMBDA_FIX = ('Train until DeepTrainingHook reaches 1 (resume with a longer schedule, or set decay_epochs no larger '
              'than the epochs trained)')


def _is_deploy_checkpoint(checkpoint: dict, state_dict: dict, path: str) -> bool:
    if checkpoint.get('meta', {}).get('deploy'):
        return True
    if any(k.endswith('layer.conv1.conv.weight') for k in state_dict):
        return False
    if any(k.endswith('layer.conv.weight') for k in state_dict):
        return True
    raise ValueError(f'{path} holds no VanillaNet layer weights (no keys like backbone.stem.layer.conv1.conv.weight '
                     'or backbone.stem.layer.conv.weight): is it a checkpoint of this config? A checkpoint of the '
                     'paper\'s code needs tools/convert_checkpoint.py first.')


def _load_into_model(cfg: Config, ckpt: dict, path: str, use_ema: bool) -> tuple[nn.Module, str, bool]:
    state_dict, source = state_dict_from_checkpoint(ckpt, use_ema)
    deploy = _is_deploy_checkpoint(ckpt, state_dict, path)
    model = build_model(cfg, deploy=deploy)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise ValueError(f'{path} ({source}, {"deploy" if deploy else "training"} form) does not fit the '
                         f'config\'s {type(model).__name__}: it holds {describe_checkpoint(ckpt)}; '
                         f'{" ".join(line.strip() for line in lines[:3])[:400]} ... Use the config the checkpoint '
                         'was trained with.') from None
    return model.eval(), source, deploy


def load_model(cfg: Config, checkpoint: str, use_ema: bool = True) -> tuple[nn.Module, str, bool]:
    """Builds ``cfg.model`` in the form of ``checkpoint`` (training or deploy) and loads it strictly.

    Args:
        cfg (Config): The config.
        checkpoint (str): A runner checkpoint (training form) or one written by tools/reparameterize.py.
        use_ema (bool): Load the EMA weights when the checkpoint has them. Defaults to True.

    Returns:
        tuple[nn.Module, str, bool]: The model (eval mode), which weights were loaded, and whether the checkpoint
        is in deploy form.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint of this config.
    """
    return _load_into_model(cfg, read_checkpoint(checkpoint), checkpoint, use_ema)


@torch.no_grad()
def reparameterize_checkpoint(cfg: Config, checkpoint: str, out: str, use_ema: bool = True,
                              input_size: tuple[int, int] = (256, 256), seed: int = 0, force: bool = False) -> dict:
    """Loads a trained checkpoint, converts it to deploy form, checks outputs agree, and saves it.

    The saved file loads strictly into ``cfg`` with ``model.backbone.deploy=True``. ``out`` is checked before the
    work (see :func:`~mmvanilla.outputs.check_output`: never the input, an existing file only with ``force``) and
    written whole or not at all.

    Returns:
        dict: ``max_abs_diff``, ``max_rel_diff`` (features on a random input, training vs deploy form), ``source``
        (which weights were converted) and ``act_lambda``.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_model`; also a checkpoint already in deploy form, or an
            output that cannot or may not be written.
        RuntimeError: lambda < 1, or the two forms disagree (nothing is written).
    """
    logger = MMLogger.get_current_instance()
    check_output(out, force, inputs=[checkpoint], what='deploy checkpoint')
    ckpt = read_checkpoint(checkpoint)
    model, source, deploy = _load_into_model(cfg, ckpt, checkpoint, use_ema)
    if deploy:
        raise ValueError(f'{checkpoint} is already in deploy form: there is nothing to convert; load it with '
                         '--cfg-options model.backbone.deploy=True')
    lam = get_act_lambda(model)
    if lam != 1.0:
        raise RuntimeError(
            f'{checkpoint} was saved at lambda={lam:g} ({source}); re-parameterization is exact only at lambda=1. '
            f'{LAMBDA_FIX}, then convert.')
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, *input_size, generator=gen) * 2 - 1
    before = _features(model, x)
    switch_to_deploy(model)
    after = _features(model, x)
    abs_diff = max((a - b).abs().max().item() for a, b in zip(before, after))
    rel_diff = max(((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item() for a, b in zip(before, after))
    logger.info(f'converted {source} of {checkpoint}: max abs diff {abs_diff:.3e}, max rel diff {rel_diff:.3e}')
    if rel_diff > 1e-3:
        raise RuntimeError(f'deploy form disagrees with the training form (max rel diff {rel_diff:.3e}); '
                           f'{out} was not written')
    meta = dict(ckpt.get('meta', {}), act_lambda=1.0, deploy=True, converted_from=checkpoint, weights=source)
    save_checkpoint(dict(meta=meta, state_dict=model.state_dict()), out)
    return dict(max_abs_diff=abs_diff, max_rel_diff=rel_diff, source=source, act_lambda=lam)


class PrepackedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that, at inference on the CPU, runs oneDNN with its weight reordered once, not per call.

    PyTorch's eager convolution hands oneDNN a plain weight, which oneDNN reorders into its blocked layout at every
    call: for VanillaNet's 4096-wide 1x1 layers at batch 1 that copy (64 MB) costs as much as the arithmetic. This
    module keeps the reordered weight (for the last input shape seen, and re-made whenever the weight changes) and
    calls the kernel torch's inductor uses for frozen convolutions. The arithmetic is oneDNN's, as in eager mode.

    It falls back to ``nn.Conv2d.forward`` wherever the prepacked kernel does not apply: gradients wanted, a device
    other than the CPU, a dtype other than float32, or oneDNN not built in. Its parameters are the ``weight`` and
    ``bias`` of the convolution it was made from (shared, same names), so state dicts are unchanged. The reordered
    copy costs as much memory again as the weight. Its outputs are channels-last tensors.

    Args:
        conv (nn.Conv2d): The convolution to take over (zero padding, numeric padding).
        relu (bool): Apply a ReLU to the output, inside oneDNN's kernel (a post-op: no extra pass over the output).
            Defaults to False.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=conv.bias is not None, device='meta')
        self.weight = conv.weight
        self.bias = conv.bias
        self.train(conv.training)
        self.relu = relu
        self._packed = None  # (key, reordered weight)

    def __getstate__(self):
        # Copies and pickles re-pack on first use: oneDNN's blocked tensors cannot be deep-copied.
        return {**super().__getstate__(), '_packed': None}

    @staticmethod
    def applies_to(module: nn.Module) -> bool:
        """Whether ``module`` is a plain float convolution this class can take over."""
        return (type(module) is nn.Conv2d and module.padding_mode == 'zeros'
                and not isinstance(module.padding, str) and torch.backends.mkldnn.is_available())

    def _fast_path(self, x: torch.Tensor) -> bool:
        return (x.device.type == 'cpu' and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)))

    def _packed_weight(self, shape: torch.Size) -> torch.Tensor:
        w = self.weight
        # Inference tensors (made under torch.inference_mode) keep no version counter.
        key = (w.data_ptr(), None if w.is_inference() else w._version, tuple(shape))
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w.detach(), list(self.padding), list(self.stride), list(self.dilation), self.groups, list(shape))
            self._packed = (key, packed)
        return self._packed[1]

    def extra_repr(self) -> str:
        return super().extra_repr() + (', relu=True' if self.relu else '')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast_path(x):
            out = super().forward(x)
            return F.relu(out) if self.relu else out
        bias = self.bias.detach() if self.bias is not None else None
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed_weight(x.shape), bias, list(self.padding), list(self.stride), list(self.dilation),
            self.groups, 'relu' if self.relu else 'none', [], '')


class StridedMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(k)`` (stride = kernel, no padding) as a max over ``k * k`` strided views; same output.

    PyTorch's CPU max-pool also computes the argmax indices, even in inference, and runs about ten times slower
    than this on VanillaNet's 2x2 pools in NCHW layout. Max is exact, so the result is bit-identical. With
    gradients wanted it defers to ``F.max_pool2d`` (whose gradient goes to one of tied maxima, not both).
    """

    @staticmethod
    def applies_to(module: nn.Module) -> bool:
        """Whether ``module`` is a non-overlapping, unpadded ``nn.MaxPool2d``."""
        if type(module) is not nn.MaxPool2d or module.return_indices or module.ceil_mode:
            return False
        pair = nn.modules.utils._pair
        return (pair(module.kernel_size) == pair(module.stride or module.kernel_size)
                and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        kh, kw = nn.modules.utils._pair(self.kernel_size)
        h, w = x.shape[-2] // kh * kh, x.shape[-1] // kw * kw
        if h == 0 or w == 0:
            return super().forward(x)  # the input is smaller than a window: let PyTorch say so
        rows = x[..., 0:h:kh, :w]
        for i in range(1, kh):
            rows = torch.maximum(rows, x[..., i:h:kh, :w])
        out = rows[..., 0::kw]
        for j in range(1, kw):
            out = torch.maximum(out, rows[..., j::kw])
        return out


class RectifiedSeriesActivation(nn.Module):
    """A deploy-form series activation whose ReLU has moved into the convolution before it: the depthwise conv alone.

    :func:`optimize_for_inference` makes it. In a VanillaNet block (conv, max-pool, ReLU, depthwise conv) the ReLU can
    run before the max-pool instead, since a max of rectified values is the rectified max, exactly; it then runs
    inside the conv's oneDNN kernel and saves a pass over the activations. The depthwise conv keeps its key
    (``conv``), so state dicts are unchanged.

    Args:
        act (SeriesActivation): A series activation in deploy form (its BatchNorm folded).
    """

    def __init__(self, act: SeriesActivation):
        super().__init__()
        if not act.deployed:
            raise ValueError('RectifiedSeriesActivation takes a deploy-form SeriesActivation; call '
                             'switch_to_deploy() first')
        self.conv = act.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # x is already rectified


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Swaps in faster, exact inference modules, in place, and returns ``model`` (in eval mode).

    Every plain ``nn.Conv2d`` with one input group (VanillaNet's 1x1 layers and stem; any other conv too) becomes a
    :class:`PrepackedConv2d`, every non-overlapping ``nn.MaxPool2d`` a :class:`StridedMaxPool2d`. In each deploy-form
    VanillaNet block the series activation's ReLU moves into the block's conv (see
    :class:`RectifiedSeriesActivation`). Depthwise convolutions are left alone: of the ways PyTorch offers, its own
    path is the fastest measured for the series activation's 7x7 kernels. Outputs agree with the model's to float32 rounding (oneDNN's
    summation order); the state dict keeps its keys. Run the model under ``torch.inference_mode()`` or
    ``torch.no_grad()``: with gradients wanted the new modules fall back to the ordinary ones. Use it after
    :func:`switch_to_deploy`, for CPU inference; training is unchanged but gains nothing.

    Args:
        model (nn.Module): Any model (a deploy-form VanillaNet, a classifier, a detector, a ResNet).

    Returns:
        nn.Module: ``model``, changed in place.

    Example:
        >>> from mmvanilla.models import VanillaNetClassifier
        >>> net = VanillaNetClassifier(dict(stem_channels=8, widths=[16], strides=[2]), deploy=True).eval()
        >>> x = torch.rand(1, 3, 64, 64)
        >>> with torch.inference_mode():
        ...     before = net(x)
        ...     after = optimize_for_inference(net)(x)
        >>> bool(torch.allclose(before, after, rtol=1e-4, atol=1e-6))
        True
    """
    _swap_inference_modules(model)
    model.eval()  # not chained: some models' train() (mmdet's ResNet) return None
    return model


def _fuse_block_relu(block: nn.Module) -> None:
    """Moves a deploy-form VanillaBlock's activation ReLU into its conv (before the max-pool, where it commutes)."""
    conv = block.layer.conv if block.layer.deployed else None
    fusable = (PrepackedConv2d.applies_to(conv) and conv.groups == 1
               and isinstance(block.act, SeriesActivation) and block.act.deployed)
    if not fusable:
        return  # training form, or already optimized
    block.layer.conv = PrepackedConv2d(conv, relu=True)
    block.act = RectifiedSeriesActivation(block.act)


def _swap_inference_modules(module: nn.Module) -> None:
    if isinstance(module, VanillaBlock):
        _fuse_block_relu(module)
    for name, child in list(module.named_children()):
        if PrepackedConv2d.applies_to(child) and child.groups == 1:
            setattr(module, name, PrepackedConv2d(child))
        elif StridedMaxPool2d.applies_to(child):
            setattr(module, name, StridedMaxPool2d(child.kernel_size, child.stride))
        else:
            _swap_inference_modules(child)
