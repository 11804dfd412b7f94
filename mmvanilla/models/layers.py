"""The fusable leaves of VanillaNet (Chen et al. 2023): deep-training convolutions and the series activation.

Each leaf has a training form and a deploy form and converts itself with ``switch_to_deploy()``: exact, idempotent,
built from fresh parameters under ``torch.no_grad()``. The fusion math lives in :mod:`mmvanilla.models.fusion`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS as MMENGINE_MODELS  # where mmcv registers its norm layers
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import depthwise_conv2d, fast_dwconv_applies, is_compiling, is_exporting
from .fusion import fuse_conv_bn, merge_conv_1x1
from .utils import check_lambda_one

DEFAULT_NORM_CFG = dict(type='BN', eps=1e-6, requires_grad=True)
# Whether a compiled graph follows the host copy of lambda as it changes (below: DeepTrainingConv).
COMPILE_FOLLOWS_HOST_LAMBDA = tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 4)


def trunc_normal_init(conv: nn.Conv2d) -> nn.Conv2d:
    """The paper's initialization: weights ~ truncated N(0, 0.02), biases 0."""
    nn.init.trunc_normal_(conv.weight, std=0.02)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def check_fusable_norm(norm_cfg: dict, where: str = 'norm_cfg') -> None:
    """Refuses, before anything is built, a norm that cannot be folded into a convolution.

    Args:
        norm_cfg (dict): The norm config (its ``type`` a registered name or a class).
        where (str): The setting's name in the message, e.g. ``'model.backbone.norm_cfg'``. Defaults to
            ``'norm_cfg'``.
    """
    norm_type = norm_cfg.get('type')
    layer = norm_type if isinstance(norm_type, type) else MMENGINE_MODELS.get(norm_type)
    if not (isinstance(layer, type) and issubclass(layer, _BatchNorm)):
        raise ValueError(f'{where}.type={getattr(norm_type, "__name__", norm_type)!r}: VanillaNet folds its norms '
                         f"into convolutions, so norm_cfg must be a BatchNorm type; set {where}.type='BN' (or "
                         "'SyncBN' on several GPUs)")


def build_fusable_norm(norm_cfg: dict, channels: int) -> _BatchNorm:
    """Builds the norm layer from ``norm_cfg`` once :func:`check_fusable_norm` has accepted it."""
    check_fusable_norm(norm_cfg)
    return build_norm_layer(norm_cfg, channels)[1]


def check_act_lambda(value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'act_lambda must lie in [0, 1] (0: full non-linearity, 1: identity), got {value}')
    return value


class _LeakyReLUKeepingOutput(torch.autograd.Function):
    """``F.leaky_relu(x, slope)`` for a slope in [0, 1] that keeps its output for backward, not its input.

    The output is kept anyway (the next convolution's input), so the input, the BatchNorm's output, need not be: one
    activation fewer per deep-training layer. Exact: for a slope in [0, 1], ``y > 0`` exactly where ``x > 0``, which
    is all the gradient ``where(x > 0, g, slope * g)`` asks of ``x``; PyTorch's own leaky ReLU backward computes it
    from ``y`` (as for its in-place form). The slope is a host float: a tensor slope (``F.prelu``) would also make
    PyTorch's backward write an elementwise slope gradient, a pass over the activation that nothing reads.
    """

    @staticmethod
    def forward(ctx, x: Tensor, slope: float) -> Tensor:
        y = F.leaky_relu(x, slope)
        ctx.save_for_backward(y)
        ctx.slope = slope
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        y, = ctx.saved_tensors
        return torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True), None


class ConvBN(nn.Module):
    """A convolution with bias followed by an optional BatchNorm (the paper's checkpoints have both)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, norm_cfg: dict | None = DEFAULT_NORM_CFG):
        super().__init__()
        self.conv = trunc_normal_init(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding))
        self.bn = build_fusable_norm(norm_cfg, out_channels) if norm_cfg is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.bn(x) if self.bn is not None else x

    def fused_weight_bias(self) -> tuple[Tensor, Tensor]:
        """Weight and bias of the one convolution equal to this module in eval mode."""
        if self.bn is None:
            return self.conv.weight, self.conv.bias
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn)


class DeepTrainingConv(nn.Module):
    """One VanillaNet layer under deep training: ``conv2(leaky_relu(conv1(x), lambda))``.

    ``conv1`` (any kernel, maps ``in_channels -> hidden_channels``) and the 1x1 ``conv2`` (``hidden_channels ->
    out_channels``) each carry a BatchNorm. ``lambda`` (the buffer ``act_lambda``, saved in checkpoints) goes from 0
    (ReLU) to 1 (identity) during training; at 1 the layer is linear and ``switch_to_deploy()`` merges it into the
    single convolution ``conv``, the deploy form.

    Lambda is also kept on the host beside the buffer, so that forward never copies the buffer from the GPU: set it
    with ``set_act_lambda()`` or ``load_state_dict()`` (as :class:`~mmvanilla.engine.DeepTrainingHook` and the tools
    do), not by writing the buffer. Below 1 the leaky ReLU takes that host value as its slope, so that its backward
    computes the input's gradient only (``F.prelu`` with the buffer would also write an elementwise slope gradient);
    traced, scripted and exported graphs take the buffer (``F.prelu``). At lambda = 1 (a fine-tuned or fully annealed
    net, e.g. every detection recipe) the forward skips the leaky ReLU, the identity then, and saves its passes over
    the activation (two forward, three backward).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        hidden_channels (int): Channels between the two convolutions.
        kernel_size (int): Kernel of ``conv1``. Defaults to 1.
        stride (int): Stride of ``conv1``. Defaults to 1.
        padding (int): Padding of ``conv1``. Defaults to 0.
        norm_cfg (dict): BatchNorm config of ``conv1``. Defaults to BN with eps 1e-6.
        out_norm_cfg (dict | None): BatchNorm config of ``conv2``; None for a plain conv (the paper's
            classifier). Defaults to ``norm_cfg``.
        act_lambda (float): Initial lambda. Defaults to 0.
        deploy (bool): Build the deploy form directly. Defaults to False.

    Example:
        >>> layer = DeepTrainingConv(8, 16, hidden_channels=8).eval()
        >>> layer.set_act_lambda(1.0)
        >>> layer.switch_to_deploy()
        >>> layer(torch.rand(2, 8, 5, 5)).shape
        torch.Size([2, 16, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, norm_cfg: dict = DEFAULT_NORM_CFG,
                 out_norm_cfg: dict | None | str = 'same', act_lambda: float = 0.0, deploy: bool = False):
        super().__init__()
        if out_norm_cfg == 'same':
            out_norm_cfg = norm_cfg
        if deploy:
            self.conv = trunc_normal_init(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding))
            return
        self.conv = None
        self.conv1 = ConvBN(in_channels, hidden_channels, kernel_size, stride, padding, norm_cfg)
        self.conv2 = ConvBN(hidden_channels, out_channels, 1, norm_cfg=out_norm_cfg)
        # The buffer (shape (1,): a shared F.prelu slope) in checkpoints and traced graphs; its host copy in forward.
        self._act_lambda_host = check_act_lambda(act_lambda)
        self.register_buffer('act_lambda', torch.full((1,), self._act_lambda_host))

    @property
    def deployed(self) -> bool:
        return self.conv is not None

    def forward(self, x: Tensor) -> Tensor:
        if self.deployed:
            return self.conv(x)
        x = self.conv1(x)
        if torch.jit.is_scripting():
            if self._act_lambda_host != 1.0:
                x = F.prelu(x, self.act_lambda)
        elif self._act_lambda_host != 1.0 or self._compiled_without_host_lambda():
            x = self._leaky_relu(x)
        return self.conv2(x)

    @torch.jit.unused
    def _compiled_without_host_lambda(self):
        # type: () -> bool
        # torch.compile before torch 2.4 (dynamo of 2.1, tested) neither guards on nor re-reads a module's float
        # attributes: a graph compiled at one lambda kept it. There the compiled graph always takes the buffer.
        return not COMPILE_FOLLOWS_HOST_LAMBDA and is_compiling()

    @torch.jit.unused
    def _leaky_relu(self, x):
        # type: (Tensor) -> Tensor
        if (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or is_exporting()
                or self._compiled_without_host_lambda()):
            return F.prelu(x, self.act_lambda)  # the slope stays the buffer in a traced or exported graph
        if x.requires_grad:
            return _LeakyReLUKeepingOutput.apply(x, self._act_lambda_host)
        return F.leaky_relu(x, self._act_lambda_host)

    def get_act_lambda(self) -> float:
        return 1.0 if self.deployed else self._act_lambda_host

    def set_act_lambda(self, value: float) -> None:
        value = check_act_lambda(value)
        if self.deployed:
            if value != 1.0:
                raise RuntimeError(f'this layer is in deploy form (lambda fixed at 1); cannot set lambda={value}')
            return
        self.act_lambda.fill_(value)
        self._act_lambda_host = value

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Merges both convolutions and norms into ``self.conv``. Only exact at lambda = 1."""
        if self.deployed:
            return
        check_lambda_one(self.get_act_lambda(), 're-parameterize a deep-training layer')
        w1, b1 = self.conv1.fused_weight_bias()
        w2, b2 = self.conv2.fused_weight_bias()
        weight, bias = merge_conv_1x1(w1, b1, w2, b2)
        src = self.conv1.conv
        conv = nn.Conv2d(src.in_channels, weight.shape[0], src.kernel_size, src.stride, src.padding,
                         device=weight.device, dtype=weight.dtype)
        conv.weight = nn.Parameter(weight.detach().clone())
        conv.bias = nn.Parameter(bias.detach().clone())
        del self.conv1, self.conv2, self.act_lambda, self._act_lambda_host
        self.conv = conv

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        lam_key = prefix + 'act_lambda'
        if self.deployed and lam_key in state_dict:
            lam = float(state_dict[lam_key].reshape(-1)[0])
            where = prefix.rstrip(".") or "layer"
            check_lambda_one(lam, f'load the training-form checkpoint of {where} into a deploy-form model '
                                  '(deploy=False loads it for training)')
            raise RuntimeError(f'{where}: the checkpoint holds the training form (lambda={lam:g}) but the model is '
                               'in deploy form. Convert it first with tools/reparameterize.py, or load it with '
                               'deploy=False.')
        lam = state_dict.get(lam_key)
        if not self.deployed and isinstance(lam, Tensor) and lam.numel() == 1 and not 0.0 <= float(lam) <= 1.0:
            # Refused even by a non-strict load: the leaky ReLU's backward is exact only for lambda in [0, 1].
            raise ValueError(f'{lam_key}: the checkpoint holds lambda={float(lam):g}, outside [0, 1] (0: ReLU, '
                             '1: identity); it is damaged or not a VanillaNet checkpoint')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if not self.deployed and not self.act_lambda.is_meta:  # the one place the host copy reads the buffer
            self._act_lambda_host = self.act_lambda.item()


class SeriesActivation(nn.Module):
    """The series informed activation: ReLU, then a depthwise ``(2n+1) x (2n+1)`` conv and BatchNorm.

    In deploy form the BatchNorm is folded into the depthwise conv, which gains a bias. On a GPU the ReLU and the
    convolution run as one Triton kernel (:func:`mmvanilla.ops.depthwise_conv2d`, forward and backward) where
    :func:`mmvanilla.ops.fast_dwconv_applies` says so; elsewhere, and in traced or exported graphs, they are
    ``F.relu`` and ``nn.Conv2d``. Both compute the same function with the same parameters.

    Args:
        channels (int): Channels.
        act_num (int): n; the kernel is ``2 * act_num + 1``. Defaults to 3.
        norm_cfg (dict): BatchNorm config. Defaults to BN with eps 1e-6.
        deploy (bool): Build the deploy form directly. Defaults to False.
        fast_dwconv (bool): Use the Triton kernel where it applies. Defaults to True.

    Example:
        >>> SeriesActivation(16, act_num=2)(torch.rand(2, 16, 7, 7)).shape
        torch.Size([2, 16, 7, 7])
    """

    def __init__(self, channels: int, act_num: int = 3, norm_cfg: dict = DEFAULT_NORM_CFG, deploy: bool = False,
                 fast_dwconv: bool = True):
        super().__init__()
        self.act_num = act_num
        self.fast_dwconv = fast_dwconv
        kernel = 2 * act_num + 1
        self.conv = trunc_normal_init(
            nn.Conv2d(channels, channels, kernel, padding=act_num, groups=channels, bias=deploy))
        self.bn = None if deploy else build_fusable_norm(norm_cfg, channels)

    @property
    def deployed(self) -> bool:
        return self.bn is None

    def forward(self, x: Tensor) -> Tensor:
        if self.fast_dwconv and not torch.jit.is_scripting() and self._kernel_applies(x):
            x = self._fused_relu_conv(x)
        else:
            x = self.conv(F.relu(x))
        if self.bn is not None:  # the training form (written so that TorchScript skips it in deploy form)
            x = self.bn(x)
        return x

    @torch.jit.unused
    def _kernel_applies(self, x):
        # type: (Tensor) -> bool
        # (a type comment: TorchScript cannot resolve postponed annotations of an unused method)
        return fast_dwconv_applies(x, self.conv.kernel_size[0])

    @torch.jit.unused
    def _fused_relu_conv(self, x):
        # type: (Tensor) -> Tensor
        return depthwise_conv2d(x, self.conv.weight, self.conv.bias, relu_input=True)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Folds the BatchNorm into the depthwise conv."""
        if self.deployed:
            return
        weight, bias = fuse_conv_bn(self.conv.weight, None, self.bn)
        src = self.conv
        conv = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, padding=src.padding,
                         groups=src.groups, device=weight.device, dtype=weight.dtype)
        conv.weight = nn.Parameter(weight.detach().clone())
        conv.bias = nn.Parameter(bias.detach().clone())
        self.conv = conv
        self.bn = None


class RectifiedSeriesActivation(nn.Module):
    """A deploy-form series activation whose ReLU has moved into the convolution before it: the depthwise conv alone.

    :func:`mmvanilla.ops.optimize_for_inference` makes it (``VanillaBlock.move_act_relu_into_conv``). In a
    VanillaNet block (conv, max-pool, ReLU, depthwise conv) the ReLU can run before the max-pool instead, since a max
    of rectified values is the rectified max, exactly; it then runs inside the conv's oneDNN kernel and saves a pass
    over the activations. The depthwise conv keeps its key
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
