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

from .availability import kernels_apply, runs_on, tl, triton

__all__ = ['fast_max_pool_applies', 'max_pool2d']

# Window positions must fit in an int8.
MAX_WINDOW = 11
_BLOCK = 1024


def fast_max_pool_applies(x: Tensor, window: int) -> bool:
    """Whether :func:`max_pool2d` should replace ``F.max_pool2d(x, window)`` for this input: in training (``x``
    needs a gradient; otherwise nothing is kept and PyTorch's pool is as good) where
    :func:`~mmvanilla.ops.availability.kernels_apply` says so, for windows of 2 to 11."""
    return x.requires_grad and 2 <= window <= MAX_WINDOW and kernels_apply(x)


if triton is not None:

    @triton.jit
    def _outputs(OH, OW, BLOCK: tl.constexpr):
        """This program's plane ``n * C + c``, its ``BLOCK`` outputs (flat index, in the plane, row, column)."""
        out = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        return tl.program_id(0), out, out < OH * OW, out // OW, out % OW

    @triton.jit
    def _max_pool_kernel(x_ptr, y_ptr, pos_ptr, C, H, W, OH, OW, sxn, sxc, sxh, sxw, S: tl.constexpr,
                         BLOCK: tl.constexpr):
        """``y`` and the window position ``pos`` of the maxima of ``BLOCK`` outputs of one plane ``(n, c)``."""
        plane, out, ok, oh, ow = _outputs(OH, OW, BLOCK)
        base = x_ptr + (plane // C).to(tl.int64) * sxn + (plane % C).to(tl.int64) * sxc
        best = tl.full((BLOCK,), float('-inf'), tl.float32)
        pos = tl.zeros((BLOCK,), tl.int32)
        for k in tl.static_range(S * S):
            v = tl.load(base + (oh * S + k // S) * sxh + (ow * S + k % S) * sxw, mask=ok,
                        other=float('-inf')).to(tl.float32)
            take = (v > best) | (v != v)  # as PyTorch: a later value only if larger, and NaN always
            best = tl.where(take, v, best)
            pos = tl.where(take, k, pos)
        offsets = plane.to(tl.int64) * OH * OW + out
        tl.store(y_ptr + offsets, best.to(y_ptr.dtype.element_ty), mask=ok)
        tl.store(pos_ptr + offsets, pos.to(tl.int8), mask=ok)

    @triton.jit
    def _max_unpool_kernel(g_ptr, pos_ptr, gx_ptr, C, H, W, OH, OW, sgn, sgc, sgh, sgw, S: tl.constexpr,
                           BLOCK: tl.constexpr):
        """The input gradient of ``BLOCK`` windows: each output's gradient at its maximum, zero elsewhere."""
        plane, out, ok, oh, ow = _outputs(OH, OW, BLOCK)
        g = tl.load(g_ptr + (plane // C).to(tl.int64) * sgn + (plane % C).to(tl.int64) * sgc + oh * sgh + ow * sgw,
                    mask=ok, other=0.0)
        pos = tl.load(pos_ptr + plane.to(tl.int64) * OH * OW + out, mask=ok, other=0).to(tl.int32)
        base = gx_ptr + plane.to(tl.int64) * H * W
        for k in tl.static_range(S * S):
            tl.store(base + (oh * S + k // S) * W + ow * S + k % S, tl.where(pos == k, g, 0.0).to(g.dtype), mask=ok)


def _pool_outputs(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Empty tensors for the pooled ``x`` and each maximum's int8 window position."""
    N, C, H, W = x.shape
    shape = (N, C, H // window, W // window)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int8)


def _pool(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """The pooled ``x`` and each maximum's int8 window position."""
    N, C, H, W = x.shape
    y, pos = _pool_outputs(x, window)
    OH, OW = y.shape[-2:]
    if y.numel():
        grid = (N * C, triton.cdiv(OH * OW, _BLOCK))
        _max_pool_kernel[grid](x, y, pos, C, H, W, OH, OW, *x.stride(), S=window, BLOCK=_BLOCK)
    return y, pos


def _unpool(grad: Tensor, pos: Tensor, window: int, H: int, W: int) -> Tensor:
    """The input gradient, ``(N, C, H, W)``: each output's gradient at its maximum's position, zero elsewhere."""
    N, C, OH, OW = pos.shape
    # The kernel writes every covered element; rows and columns past the last whole window stay zero.
    covered = H == OH * window and W == OW * window
    grad_x = (grad.new_empty if covered else grad.new_zeros)(N, C, H, W)
    if grad.numel():
        grid = (N * C, triton.cdiv(OH * OW, _BLOCK))
        _max_unpool_kernel[grid](grad, pos, grad_x, C, H, W, OH, OW, *grad.stride(), S=window, BLOCK=_BLOCK)
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
@torch.library.custom_op('mmvanilla::max_pool2d_with_positions', mutates_args=())
def _pool_op(x: Tensor, window: int) -> tuple[Tensor, Tensor]:
    return _pool(x, window)


@torch.library.custom_op('mmvanilla::max_pool2d_backward', mutates_args=())
def _unpool_op(grad: Tensor, pos: Tensor, window: int, height: int, width: int) -> Tensor:
    return _unpool(grad, pos, window, height, width)


_pool_op.register_fake(_pool_outputs)


@_unpool_op.register_fake
def _(grad, pos, window, height, width):
    return grad.new_empty(*pos.shape[:2], height, width)


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
        x (Tensor): Input ``(N, C, H, W)`` in fp32, fp16 or bf16, any memory layout (NCHW is the fast one).
        window (int): Window side and stride, 2 to 11.

    Returns:
        Tensor: ``(N, C, H // window, W // window)``, NCHW-contiguous.
    """
    if triton is None or not runs_on(x.device):
        raise RuntimeError(f'mmvanilla.ops.max_pool2d runs on CUDA tensors (the CPU only under Triton\'s '
                           f'interpreter), got one on {x.device}; use F.max_pool2d(x, {window}) there')
    if x.dim() != 4 or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f'max_pool2d takes an (N, C, H, W) fp32, fp16 or bf16 input, got {tuple(x.shape)} '
                         f'{x.dtype}')
    if not 2 <= window <= MAX_WINDOW:
        raise ValueError(f'max_pool2d takes windows of 2 to {MAX_WINDOW}, got {window}; use F.max_pool2d')
    if torch.compiler.is_compiling():
        return _pool_op(x, window)[0]
    return _MaxPool2d.apply(x, window)
