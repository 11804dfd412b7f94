"""The VanillaNet backbone (Chen et al. 2023, "VanillaNet: the Power of Minimalism in Deep Learning").

A 4x4/stride-4 stem, then one 1x1 convolution per block with max-pooling where a block downsamples, each followed
by the series informed activation. No shortcuts, no attention. Every convolution is a :class:`DeepTrainingConv`,
so the whole net trains in the deep-training form and re-parameterizes to one conv per layer.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from mmdet.registry import MODELS
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..ops import fast_max_pool_applies, is_compiling, max_pool2d
from .layers import DEFAULT_NORM_CFG, DeepTrainingConv, RectifiedSeriesActivation, SeriesActivation, check_act_lambda
from .official import adapt_official_state_dict, check_checkpoint_form
from .utils import check_lambda_one


def _deep(extra_blocks: int, scale: float = 1.0) -> dict:
    """VanillaNet-7..13: the 7-layer net with ``extra_blocks`` more 2048-wide stride-1 blocks (13 has six)."""
    widths = [512, 1024, 2048] + [2048] * extra_blocks + [4096, 4096]
    strides = [1, 2, 2] + [1] * extra_blocks + [2, 1]
    return dict(stem_channels=int(512 * scale), widths=[int(w * scale) for w in widths], strides=strides)


# The one table of variants: channels of the stem and of each block, and each block's stride.
ARCH_SETTINGS: dict[str, dict] = {
    '5': dict(stem_channels=512, widths=[1024, 2048, 4096], strides=[2, 2, 2]),
    '6': dict(stem_channels=512, widths=[1024, 2048, 4096, 4096], strides=[2, 2, 2, 1]),
    **{str(7 + k): _deep(k) for k in range(7)},
    '13_x1_5': _deep(6, scale=1.5),
    # Stride-3 stem and adaptive max-pools to fixed sizes instead of stride-2 pools (for 224 inputs).
    '13_x1_5_ada_pool': dict(_deep(6, scale=1.5), stem_stride=3, stem_padding=1,
                             pool_sizes=[None, 38, 19] + [None] * 6 + [10, None]),
}

_ARCH_KEYS = {'stem_channels', 'widths', 'strides', 'stem_stride', 'stem_padding', 'pool_sizes'}


def resolve_arch(arch: str | int | dict) -> dict:
    """Returns a validated, complete arch dict for a variant name (e.g. ``'13'``) or a custom dict."""
    if isinstance(arch, (str, int)):
        if str(arch) not in ARCH_SETTINGS:
            raise KeyError(f'unknown VanillaNet arch {arch!r}; valid names: {", ".join(ARCH_SETTINGS)} '
                           '(or a dict with stem_channels, widths and strides)')
        arch = ARCH_SETTINGS[str(arch)]
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a variant name or a dict, got {type(arch).__name__}')
    unknown = set(arch) - _ARCH_KEYS
    missing = {'stem_channels', 'widths', 'strides'} - set(arch)
    if unknown or missing:
        raise KeyError(f'custom arch: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; '
                       f'valid keys: {sorted(_ARCH_KEYS)}')
    arch = {**dict(stem_stride=4, stem_padding=0, pool_sizes=None), **arch}
    widths, strides = list(arch['widths']), list(arch['strides'])
    pool_sizes = list(arch['pool_sizes']) if arch['pool_sizes'] is not None else [None] * len(widths)
    if len(widths) != len(strides) or len(pool_sizes) != len(widths) or not widths:
        raise ValueError(f'custom arch: widths ({len(widths)}), strides ({len(strides)}) and pool_sizes '
                         f'({len(pool_sizes)}) must be non-empty and of equal length, one entry per block')
    if any(int(s) != s or s < 1 for s in strides):
        raise ValueError(f'custom arch: strides must be integers >= 1, got {strides}')
    if any(int(c) != c or c < 1 for c in [arch['stem_channels'], *widths]):
        raise ValueError(f'custom arch: channels must be integers >= 1, got {arch["stem_channels"]}, {widths}')
    arch.update(widths=widths, strides=strides, pool_sizes=pool_sizes)
    return arch


def min_input_size(arch: str | dict) -> int:
    """The smallest input height and width an arch takes: its total stride (the stem's times the blocks' pooling
    strides), below which a pooling window finds no pixel.

    Example:
        >>> min_input_size('5'), min_input_size('13')
        (32, 32)
    """
    arch = resolve_arch(arch)
    return arch['stem_stride'] * math.prod(
        stride for stride, pool_size in zip(arch['strides'], arch['pool_sizes']) if pool_size is None)


def stage_ends(arch: dict) -> list[int]:
    """For each stage of a resolved arch, the index of the block whose output it is (-1: the stem). A stage ends
    before each block that downsamples."""
    ends = [-1]
    for i, (stride, pool_size) in enumerate(zip(arch['strides'], arch['pool_sizes'])):
        if stride > 1 or pool_size is not None:
            ends.append(i)
        else:
            ends[-1] = i
    return ends


class VanillaBlock(nn.Module):
    """One VanillaNet layer: deep-training conv, max-pool if the block downsamples, series activation.

    With ``fast_dwconv``, a strided max-pool in training runs as :func:`mmvanilla.ops.max_pool2d` where
    :func:`mmvanilla.ops.fast_max_pool_applies` says so (CUDA, NCHW or channels_last): same values and gradients,
    but it keeps an int8 window position per output for backward instead of its input and int64 indices.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, act_num: int,
                 norm_cfg: dict, deploy: bool, act_lambda: float, kernel_size: int = 1, conv_stride: int = 1,
                 padding: int = 0, pool_stride: int = 1, pool_size: int | None = None, fast_dwconv: bool = True):
        super().__init__()
        self.layer = DeepTrainingConv(in_channels, out_channels, hidden_channels, kernel_size, conv_stride,
                                      padding, norm_cfg, act_lambda=act_lambda, deploy=deploy)
        if pool_size is not None:
            self.pool = nn.AdaptiveMaxPool2d(pool_size)
        elif pool_stride > 1:
            self.pool = nn.MaxPool2d(pool_stride)
        else:
            self.pool = nn.Identity()
        self.act = SeriesActivation(out_channels, act_num, norm_cfg, deploy=deploy, fast_dwconv=fast_dwconv)
        self.fast_dwconv = fast_dwconv

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer(x)
        if (self.fast_dwconv and isinstance(self.pool, nn.MaxPool2d) and not torch.jit.is_scripting()
                and self._kernel_applies(x)):
            x = self._pool_keeping_positions(x)
        else:
            x = self.pool(x)
        return self.act(x)

    @torch.jit.unused
    def _kernel_applies(self, x):
        # type: (Tensor) -> bool
        return fast_max_pool_applies(x, self.pool.kernel_size)

    @torch.jit.unused
    def _pool_keeping_positions(self, x):
        # type: (Tensor) -> Tensor
        return max_pool2d(x, self.pool.kernel_size)

    def move_act_relu_into_conv(self, conv_relu: Callable[[nn.Module], nn.Module | None]) -> bool:
        """An exact inference rewrite, for :func:`mmvanilla.ops.optimize_for_inference`: the activation's ReLU moves
        before the max-pool (a max of rectified values is the rectified max) into the layer's convolution.

        Args:
            conv_relu (Callable): Takes the deploy-form convolution and returns a module computing ``relu(conv(x))``
                with the same parameters, or None where it cannot.

        Returns:
            bool: Whether the block changed: only in deploy form, once, and where ``conv_relu`` gave a module.
        """
        if not (self.layer.deployed and isinstance(self.act, SeriesActivation) and self.act.deployed):
            return False  # training form, or already rewritten
        fused = conv_relu(self.layer.conv)
        if fused is None:
            return False
        self.layer.conv = fused
        self.act = RectifiedSeriesActivation(self.act)
        return True


@contextmanager
def _norm_stats_kept(module: nn.Module) -> Iterator[None]:
    """Restores the running statistics of ``module``'s BatchNorms on exit.

    Activation checkpointing runs a block's forward twice; the second run (during backward) must not update the
    running mean and variance again, or ``with_cp`` would change the trained model.
    """
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    saved = [[buf.clone() for buf in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


@MODELS.register_module()
class VanillaNet(BaseModule):
    """VanillaNet backbone for detection and classification.

    Stages are numbered by output stride: stage 0 is the stride-4 output (the stem and any stride-1 blocks after
    it), stages 1, 2, 3 the outputs of the last block at each following downsampling (strides 8, 16, 32).

    Args:
        arch (str | dict): ``'5'`` ... ``'13'``, ``'13_x1_5'``, ``'13_x1_5_ada_pool'``, or a dict with
            ``stem_channels``, ``widths`` and ``strides`` (one per block) and optionally ``stem_stride``,
            ``stem_padding`` and ``pool_sizes`` (adaptive max-pool sizes, None where the stride applies).
            Defaults to ``'5'``.
        act_num (int): n of the series activation (kernel 2n+1). Defaults to 3.
        out_indices (Sequence[int]): Stages to output. Defaults to ``(1, 2, 3)``.
        frozen_stages (int): Stages ``0..frozen_stages`` are frozen (eval mode, no gradients); -1 freezes
            nothing. Defaults to -1.
        norm_eval (bool): Keep BatchNorms in eval mode while training. Defaults to False.
        norm_cfg (dict): BatchNorm config ('BN' or 'SyncBN'). Defaults to BN with eps 1e-6.
        act_lambda (float): Initial deep-training lambda: 0 to train from scratch, 1 to fine-tune a trained net.
            Defaults to 0.
        deploy (bool): Build the re-parameterized form directly. Defaults to False.
        with_cp (bool | Sequence[int]): Activation checkpointing (``torch.utils.checkpoint``) of each block while
            training: only block inputs are kept, the rest is recomputed during backward; less memory for more
            time. Outputs, gradients and BatchNorm statistics are as without. A sequence of stage indices
            checkpoints the blocks of those stages only: every block recomputes convolutions of similar cost, but
            the early, high-resolution ones hold most of the activations (VanillaNet-13 keeps under a tenth of them
            in its last stage, README "Training on a GPU"). Defaults to False.
        fast_dwconv (bool): Run the Triton kernels of :mod:`mmvanilla.ops` on CUDA: each series activation's ReLU
            and depthwise conv as one kernel, and in training the downsampling max-pools as a kernel that keeps
            less for backward; the environment variable ``MMVANILLA_FAST_DWCONV=0`` turns them off for a whole
            run. Defaults to True.
        init_cfg (dict | list[dict] | None): mmengine init config, e.g. ``dict(type='Pretrained',
            checkpoint=PATH)``. Defaults to None (the paper's truncated-normal initialization).

    Example:
        >>> import torch
        >>> net = VanillaNet('13', out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(f.shape) for f in net(torch.rand(1, 3, 224, 224))]
        [(1, 512, 56, 56), (1, 1024, 28, 28), (1, 2048, 14, 14), (1, 4096, 7, 7)]
    """

    arch_settings = ARCH_SETTINGS

    def __init__(self, arch: str | dict = '5', act_num: int = 3, out_indices: Sequence[int] = (1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, norm_cfg: dict = DEFAULT_NORM_CFG,
                 act_lambda: float = 0.0, deploy: bool = False, with_cp: bool | Sequence[int] = False,
                 fast_dwconv: bool = True,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = resolve_arch(arch)
        if isinstance(act_num, bool) or not isinstance(act_num, int) or act_num < 0:
            raise ValueError(f'act_num must be an integer >= 0 (the activation kernel is 2*act_num+1), '
                             f'got {act_num!r}')
        check_act_lambda(act_lambda)
        self.act_num = act_num
        self.deploy = deploy
        self.norm_eval = norm_eval
        common = dict(act_num=act_num, norm_cfg=norm_cfg, deploy=deploy, act_lambda=act_lambda,
                      fast_dwconv=fast_dwconv)

        stem_channels = self.arch['stem_channels']
        self.stem = VanillaBlock(3, stem_channels, stem_channels, kernel_size=4,
                                 conv_stride=self.arch['stem_stride'], padding=self.arch['stem_padding'], **common)
        self.blocks = nn.ModuleList()
        channels = [stem_channels]
        for width, stride, pool_size in zip(self.arch['widths'], self.arch['strides'], self.arch['pool_sizes']):
            self.blocks.append(VanillaBlock(channels[-1], width, channels[-1], pool_stride=stride,
                                            pool_size=pool_size, **common))
            channels.append(width)
        self.stage_ends = stage_ends(self.arch)
        self.num_stages = len(self.stage_ends)
        self.stage_channels = tuple(channels[end + 1] for end in self.stage_ends)
        self.min_input_size = min_input_size(self.arch)  #: the smallest input height and width

        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not -self.num_stages <= i < self.num_stages]
        if not out_indices or bad:
            raise ValueError(f'out_indices {out_indices} out of range: this arch has {self.num_stages} stages, '
                             f'valid indices are 0..{self.num_stages - 1}')
        self.out_indices = tuple(i % self.num_stages for i in out_indices)
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f'out_indices {out_indices} must be increasing, each stage once (e.g. '
                             f'{tuple(sorted(set(self.out_indices)))}): necks such as FPN take the stages in order of '
                             'stride, and any other order builds a pyramid with its levels at the wrong strides')
        self.out_channels = tuple(self.stage_channels[i] for i in self.out_indices)
        if not -1 <= frozen_stages < self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} out of range: use -1 (nothing frozen) to '
                             f'{self.num_stages - 1} (every stage)')
        self.frozen_stages = frozen_stages
        self._freeze_stages()
        if not isinstance(with_cp, bool):
            stages = tuple(with_cp) if isinstance(with_cp, (list, tuple)) else (None,)
            if any(isinstance(i, bool) or not isinstance(i, int) or not -self.num_stages <= i < self.num_stages
                   for i in stages):
                raise ValueError(f'with_cp={with_cp!r}: give True, False or a list of stage indices '
                                 f'0..{self.num_stages - 1} (this arch has {self.num_stages} stages)')
            with_cp = tuple(sorted({i % self.num_stages for i in stages}))
        self.with_cp = with_cp

    def _checkpoints(self, block_index: int) -> bool:
        """Whether ``with_cp`` covers block ``block_index`` (-1: the stem), by its stage."""
        if isinstance(self.with_cp, bool):
            return self.with_cp
        return next(k for k, end in enumerate(self.stage_ends) if end >= block_index) in self.with_cp

    def _run(self, block_index: int, block: nn.Module, x: Tensor) -> Tensor:
        if self._checkpoints(block_index) and self.training and torch.is_grad_enabled():
            if is_compiling():
                # A compiled graph recomputes the block's arithmetic only: its statistics' updates happen once.
                return checkpoint(block, x, use_reentrant=False)
            return checkpoint(block, x, use_reentrant=False,
                              context_fn=lambda: (nullcontext(), _norm_stats_kept(block)))
        return block(x)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if not (torch.jit.is_scripting() or torch.jit.is_tracing() or is_compiling()):
            self._check_input(x)
        x = self._run(-1, self.stem, x)
        outs = {}
        if -1 in self.stage_ends:
            outs[self.stage_ends.index(-1)] = x
        ends = {end: k for k, end in enumerate(self.stage_ends)}
        for i, block in enumerate(self.blocks):
            x = self._run(i, block, x)
            if i in ends:
                outs[ends[i]] = x
        return tuple(outs[i] for i in self.out_indices)

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'VanillaNet takes images as a (batch, 3, height, width) tensor, got shape '
                             f'{tuple(x.shape)}')
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f'an input of {x.shape[-2]}x{x.shape[-1]} pixels is too small for this VanillaNet: it '
                             f'downsamples by {self.min_input_size}, so height and width must be at least '
                             f'{self.min_input_size}')

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.blocks[:self.stage_ends[self.frozen_stages] + 1]]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'VanillaNet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def get_act_lambda(self) -> float:
        """The deep-training lambda (the smallest over layers; 1 in deploy form)."""
        return min(m.get_act_lambda() for m in self.modules() if isinstance(m, DeepTrainingConv))

    def set_act_lambda(self, value: float) -> None:
        """Sets lambda of every layer: 0 is ReLU, 1 the identity (then the net can be re-parameterized)."""
        value = check_act_lambda(value)
        for module in self.modules():
            if isinstance(module, DeepTrainingConv):
                module.set_act_lambda(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adapt_official_state_dict(state_dict, prefix, deploy=self.deploy)  # the paper's key names, form check
        if not prefix and self._take_backbone_weights(state_dict) and not self.deploy:
            check_checkpoint_form(state_dict, prefix, deploy=False)
        self._check_checkpoint_matches(state_dict, prefix)
        if not prefix:
            self._check_something_loads(state_dict)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _take_backbone_weights(self, state_dict: dict) -> bool:
        """A whole model's weights loaded into this backbone itself (``init_cfg=dict(type='Pretrained', ...)``
        without ``prefix``): a timm ``vanillanet_*`` or ``VanillaNetClassifier`` state dict, or a detector's, holds
        it under ``backbone.``. Keeps that part, renamed, and leaves the head or neck out, logging the counts.
        Returns whether it did."""
        own = ('stem.', 'blocks.')
        if any(k.startswith(own) for k in state_dict) or not any(k.startswith('backbone.') for k in state_dict):
            return False
        kept = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
        left = sorted({k.split('.')[0] for k in state_dict if not k.startswith('backbone.')})
        MMLogger.get_current_instance().info(
            f'VanillaNet: loading the backbone of a whole model\'s checkpoint ({len(kept)} tensors under backbone.); '
            f'left out its {len(state_dict) - len(kept)} other tensors ({", ".join(left) or "none"})')
        state_dict.clear()
        state_dict.update(kept)
        return True

    def _check_something_loads(self, state_dict: dict) -> None:
        """Refuses a checkpoint that would load no weight into this backbone (mmengine only warns, then trains
        from random weights); logs how many it loads."""
        own = [k for k in self.state_dict() if not k.endswith('num_batches_tracked')]
        found = [k for k in own if k in state_dict]
        if not found:
            example = ', '.join(sorted(state_dict)[:3]) or 'none'
            raise ValueError(
                f'the checkpoint holds no weight of this VanillaNet (its keys: {example} ...): give a VanillaNet '
                'checkpoint (the paper\'s, a timm vanillanet_* or VanillaNetClassifier state dict, an mmvanilla '
                'detector\'s), or set init_cfg\'s prefix to the part that holds the backbone (e.g. prefix=\'backbone.\')')
        MMLogger.get_current_instance().info(f'VanillaNet: the checkpoint gives {len(found)} of its {len(own)} '
                                             'weights')

    def _check_checkpoint_matches(self, state_dict: dict, prefix: str) -> None:
        """Refuses, by name, a checkpoint of another arch or act_num before any tensor is copied."""
        act_key = prefix + 'stem.act.conv.weight'
        if act_key not in state_dict:
            return
        kernel = state_dict[act_key].shape[-1]
        if kernel != 2 * self.act_num + 1:
            raise ValueError(f'checkpoint has {kernel}x{kernel} activation kernels but the model has act_num='
                             f'{self.act_num}: set act_num={(kernel - 1) // 2}')
        widths = []
        while prefix + f'blocks.{len(widths)}.act.conv.weight' in state_dict:
            widths.append(state_dict[prefix + f'blocks.{len(widths)}.act.conv.weight'].shape[0])
        found = dict(stem_channels=state_dict[act_key].shape[0], widths=widths)
        mine = dict(stem_channels=self.arch['stem_channels'], widths=self.arch['widths'])
        if found != mine:
            names = [name for name, arch in ARCH_SETTINGS.items()
                     if dict(stem_channels=arch['stem_channels'], widths=arch['widths']) == found]
            hint = f"set arch='{names[0]}'" if names else 'set arch to a dict with these widths'
            raise ValueError(f'checkpoint is a VanillaNet with stem {found["stem_channels"]} and {len(widths)} '
                             f'blocks of widths {widths}, the model has stem {mine["stem_channels"]} and '
                             f'{len(mine["widths"])} blocks of widths {mine["widths"]}: {hint}')

    def switch_to_deploy(self) -> None:
        """Re-parameterizes every layer into its deploy form. Exact; needs lambda = 1; idempotent."""
        check_lambda_one(self.get_act_lambda(), 're-parameterize VanillaNet')
        leaves = [m for m in self.modules() if m is not self and hasattr(m, 'switch_to_deploy')]
        for leaf in leaves:
            leaf.switch_to_deploy()
        self.deploy = True
        self._freeze_stages()
