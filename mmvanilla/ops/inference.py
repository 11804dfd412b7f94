"""CPU inference modules: exact, faster stand-ins for PyTorch's convolution and max-pool at inference.

:func:`optimize_for_inference` swaps them into any model. They need PyTorch built with oneDNN
(:func:`inference_modules_available`); where it is missing, or a call wants gradients, runs on another device or
dtype, each module runs as the PyTorch module it replaces. VanillaNet's blocks take one model-specific rewrite,
through their documented method ``move_act_relu_into_conv`` (:class:`~mmvanilla.models.vanillanet.VanillaBlock`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['PrepackedConv2d', 'StridedMaxPool2d', 'inference_modules_available', 'optimize_for_inference']


def inference_modules_available() -> bool:
    """Whether :class:`PrepackedConv2d` has its fast path here: PyTorch built with oneDNN and its prepacked kernels."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_convolution_pointwise')


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
                and not isinstance(module.padding, str) and inference_modules_available())

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


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Swaps in faster, exact inference modules, in place, and returns ``model`` (in eval mode).

    Every plain ``nn.Conv2d`` with one input group (VanillaNet's 1x1 layers and stem; any other conv too) becomes a
    :class:`PrepackedConv2d`, every non-overlapping ``nn.MaxPool2d`` a :class:`StridedMaxPool2d`. In each deploy-form
    VanillaNet block the series activation's ReLU moves into the block's conv
    (``VanillaBlock.move_act_relu_into_conv``). Depthwise convolutions are left alone: of the ways PyTorch offers,
    its own path is the fastest measured for the series activation's 7x7 kernels. Outputs agree with the model's to
    float32 rounding (oneDNN's summation order); the state dict keeps its keys. Run the model under
    ``torch.inference_mode()`` or ``torch.no_grad()``: with gradients wanted the new modules fall back to the
    ordinary ones. Use it after :func:`mmvanilla.deploy.switch_to_deploy`, for CPU inference; training is unchanged
    but gains nothing.

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


def _conv_with_relu(conv: nn.Module) -> PrepackedConv2d | None:
    """``relu(conv(x))`` in one oneDNN kernel, where :class:`PrepackedConv2d` can take ``conv`` over."""
    return PrepackedConv2d(conv, relu=True) if PrepackedConv2d.applies_to(conv) and conv.groups == 1 else None


def _swap_inference_modules(module: nn.Module) -> None:
    move_relu = getattr(module, 'move_act_relu_into_conv', None)
    if callable(move_relu):
        move_relu(_conv_with_relu)
    for name, child in list(module.named_children()):
        if PrepackedConv2d.applies_to(child) and child.groups == 1:
            setattr(module, name, PrepackedConv2d(child))
        elif StridedMaxPool2d.applies_to(child):
            setattr(module, name, StridedMaxPool2d(child.kernel_size, child.stride))
        else:
            _swap_inference_modules(child)
