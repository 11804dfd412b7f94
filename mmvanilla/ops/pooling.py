"""VanillaNet's downsampling max-pool as Triton kernels that keep, for backward, only where each maximum was.

A VanillaNet block that downsamples max-pools the output of its layer in ``s x s`` windows with stride ``s``
(Chen et al. 2023, Sec. 3.1). PyTorch's max-pool keeps its whole input and an int64 index per output for the
backward pass; in fp16 training the indices weigh as much as the input itself. The window is all the gradient
needs: these kernels keep one int8 per output (the maximum's position in its window, row-major, the first of equal
values, as PyTorch picks it), and nothing of the input, which no other layer keeps.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .availability import OPERATORS_SUPPORTED, is_compiling, kernels_apply, runs_on, tl, triton

__all__ = ['fast_max_pool_applies', 'max_pool2d']

# Window positions must fit in an int8.
MAX_WINDOW = 11
_BLOCK = 1024
# The layouts pooled in place: the output and the input gradient keep the input's (channels_last: the ImageNet
# configs'), as PyTorch's pool does.
_LAYOUTS = (torch.contiguous_format, torch.channels_last)


def fast_max_pool_applies(x: Tensor, window: int) -> bool:
    """Whether :func:`max_pool2d` should replace ``F.max_pool2d(x, window)`` for this input: in training (``x``
    needs a gradient; otherwise nothing is kept and PyTorch's pool is as good) where
    :func:`~mmvanilla.ops.availability.kernels_apply` says so, in NCHW or channels_last, for windows of 2 to 11."""
    return x.requires_grad and 2 <= window <= MAX_WINDOW and kernels_apply(x, _LAYOUTS)


if triton is not None:

    @triton.jit
    def _outputs(C, OH, OW, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        """This program's ``BLOCK`` outputs, consecutive in the pooled tensor's memory: their offset there, whether
        they exist, and their image, channel, row and column.

        NCHW: program ``(n * C + c, j)`` takes the ``j``-th block of that plane's outputs. channels_last: program
        ``(n * OH * OW + oh * OW + ow, j)`` takes the ``j``-th block of that position's channels, so loads and
        stores run along the channels, contiguous in memory.
        """
        if CHANNELS_LAST:
            p = tl.program_id(0)
            c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            n, oh, ow = p // (OH * OW), p // OW % OH, p % OW
            offset, ok = p.to(tl.int64) * C + c, c < C
        else:
            plane = tl.program_id(0)
            out = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            n, c, oh, ow = plane // C, plane % C, out // OW, out % OW
            offset, ok = plane.to(tl.int64) * OH * OW + out, out < OH * OW
        return offset, ok, n, c, oh, ow

    @triton.jit
    def _max_pool_kernel(x_ptr, y_ptr, pos_ptr, C, OH, OW, sxn, sxc, sxh, sxw, S: tl.constexpr,
                         CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        """``y`` and the window position ``pos`` of the maxima of ``BLOCK`` outputs."""
        out, ok, n, c, oh, ow = _outputs(C, OH, OW, CHANNELS_LAST, BLOCK)
        base = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
        best = tl.full((BLOCK,), float('-inf'), tl.float32)
        pos = tl.zeros((BLOCK,), tl.int32)
        for k in tl.static_range(S * S):
            v = tl.load(base + (oh * S + k // S) * sxh + (ow * S + k % S) * sxw, mask=ok,
                        other=float('-inf')).to(tl.float32)
            take = (v > best) | (v != v)  # as PyTorch: a later value only if larger, and NaN always
            best = tl.where(take, v, best)
            pos = tl.where(take, k, pos)
        tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=ok)
        tl.store(pos_ptr + out, pos.to(tl.int8), mask=ok)

    @triton.jit
    def _max_unpool_kernel(g_ptr, pos_ptr, gx_ptr, C, OH, OW, sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                           S: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        """The input gradient of ``BLOCK`` windows: each output's gradient at its maximum, zero elsewhere."""
        out, ok, n, c, oh, ow = _outputs(C, OH, OW, CHANNELS_LAST, BLOCK)
        g = tl.load(g_ptr + n.to(tl.int64) * sgn + c.to(tl.int64) * sgc + oh * sgh + ow * sgw, mask=ok, other=0.0)
        pos = tl.load(pos_ptr + out, mask=ok, other=0).to(tl.int32)
        base = gx_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
        for k in tl.static_range(S * S):
            tl.store(base + (oh * S + k // S) * sxh + (ow * S + k % S) * sxw, tl.where(pos == k, g, 0.0).to(g.dtype),
                     mask=ok)


def _channels_last(x: Tensor) -> bool:
    """Whether ``x`` is laid out channels_last (and not also NCHW, as when ``C`` or ``H * W`` is 1)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _layout(x: Tensor) -> torch.memory_format:
    return torch.channels_last if _channels_last(x) else torch.contiguous_format


def _pool_outputs(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Empty tensors for the pooled ``x`` and each maximum's int8 window position, in ``x``'s layout (channels_last
    or NCHW)."""
    N, C, H, W = x.shape
    shape = (N, C, H // window, W // window)
    layout = _layout(x)
    return (torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout),
            torch.empty(shape, dtype=torch.int8, device=x.device, memory_format=layout))


def _grid(pos: Tensor) -> tuple[tuple[int, int], dict]:
    """The programs over outputs of ``pos``'s shape and layout (see ``_outputs``), and the kernels' layout flags."""
    N, C, OH, OW = pos.shape
    if _channels_last(pos):
        block = min(_BLOCK, triton.next_power_of_2(C))
        return (N * OH * OW, triton.cdiv(C, block)), dict(CHANNELS_LAST=True, BLOCK=block)
    return (N * C, triton.cdiv(OH * OW, _BLOCK)), dict(CHANNELS_LAST=False, BLOCK=_BLOCK)


def _pool(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """The pooled ``x`` and each maximum's int8 window position."""
    y, pos = _pool_outputs(x, window)
    if y.numel():
        grid, flags = _grid(pos)
        _max_pool_kernel[grid](x, y, pos, *y.shape[1:], *x.stride(), S=window, **flags)
    return y, pos


def _unpool(grad: Tensor, pos: Tensor, window: int, H: int, W: int) -> Tensor:
    """The input gradient, ``(N, C, H, W)`` in the positions' layout: each output's gradient at its maximum's
    position, zero elsewhere."""
    N, C, OH, OW = pos.shape
    grad_x = torch.empty(N, C, H, W, dtype=grad.dtype, device=grad.device, memory_format=_layout(pos))
    if H != OH * window or W != OW * window:  # rows and columns past the last whole window: the kernel skips them
        grad_x.zero_()
    if grad.numel():
        grid, flags = _grid(pos)
        _max_unpool_kernel[grid](grad, pos, grad_x, C, OH, OW, *grad.stride(), *grad_x.stride(), S=window, **flags)
    return grad_x


class _MaxPool2d(torch.autograd.Function):
    """The eager path: an autograd function straight over the kernels (less overhead per call than an operator)."""

    @staticmethod
    def forward(ctx, x: Tensor, window: int) -> Tensor:
        y, pos = _pool(x, window)
        ctx.save_for_backward(pos)
        ctx.window, ctx.input_size = window, x.shape[-2:]
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        pos, = ctx.saved_tensors
        return _unpool(grad, pos, ctx.window, *ctx.input_size), None


# The same kernels as PyTorch operators, for torch.compile (see mmvanilla.ops.depthwise).
# Registered only where torch can (>= 2.4); the kernels are off on an older torch (.availability).
if OPERATORS_SUPPORTED:
    @torch.library.custom_op('mmvanilla::max_pool2d_with_positions', mutates_args=())
    def _pool_op(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
        return _pool(x, window)

    @torch.library.custom_op('mmvanilla::max_pool2d_backward', mutates_args=())
    def _unpool_op(grad: Tensor, pos: Tensor, window: int, height: int, width: int) -> Tensor:
        return _unpool(grad, pos, window, height, width)

    _pool_op.register_fake(_pool_outputs)

    @_unpool_op.register_fake
    def _(grad, pos, window, height, width):
        return torch.empty(*pos.shape[:2], height, width, dtype=grad.dtype, device=grad.device,
                           memory_format=_layout(pos))

    def _save_for_op_backward(ctx, inputs, output):
        x, window = inputs
        ctx.save_for_backward(output[1])
        ctx.window, ctx.input_size = window, x.shape[-2:]

    def _op_backward(ctx, grad, grad_pos):
        pos, = ctx.saved_tensors
        return _unpool_op(grad, pos, ctx.window, *ctx.input_size), None

    _pool_op.register_autograd(_op_backward, setup_context=_save_for_op_backward)


def max_pool2d(x: Tensor, window: int) -> Tensor:
    """``F.max_pool2d(x, window)`` (stride ``window``, no padding) in Triton, keeping only an int8 window position
    per output for backward.

    Same values and gradients as PyTorch's pool, NaN included. Runs on CUDA tensors, and on CPU tensors under
    Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is imported), which the tests use.

    Args:
        x (Tensor): Input ``(N, C, H, W)`` in fp32, fp16 or bf16, any memory layout (NCHW and channels_last are the
            fast ones).
        window (int): Window side and stride, 2 to 11.

    Returns:
        Tensor: ``(N, C, H // window, W // window)``, channels_last if ``x`` is, else NCHW-contiguous.
    """
    if triton is None or not runs_on(x.device):
        raise RuntimeError(f'mmvanilla.ops.max_pool2d runs on CUDA tensors (the CPU only under Triton\'s '
                           f'interpreter), got one on {x.device}; use F.max_pool2d(x, {window}) there')
    if x.dim() != 4 or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f'max_pool2d takes an (N, C, H, W) fp32, fp16 or bf16 input, got {tuple(x.shape)} '
                         f'{x.dtype}')
    if not 2 <= window <= MAX_WINDOW:
        raise ValueError(f'max_pool2d takes windows of 2 to {MAX_WINDOW}, got {window}; use F.max_pool2d')
    if is_compiling():
        return _pool_op(x, window)[0]
    return _MaxPool2d.apply(x, window)
