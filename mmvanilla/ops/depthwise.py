"""The series activation's depthwise convolution as Triton kernels, forward and backward.

VanillaNet (Chen et al. 2023, Sec. 3.3) follows every layer with ReLU and a depthwise ``(2n+1) x (2n+1)``
convolution. On a GPU, PyTorch runs an NCHW depthwise convolution in its own native kernels, which spend most of a
VanillaNet training step there (input and weight gradients above all); cuDNN takes it only in channels_last.

These kernels put the work on the tensor cores. For one channel, a tile of ``BH`` output rows is, for each kernel
column ``j``, a matrix product ``A_j @ X_j``: ``X_j`` holds the ``BH + K - 1`` input rows the tile needs, shifted
by ``j - K // 2`` columns, and ``A_j`` is the banded (Toeplitz) matrix of the kernel's column ``j``,
``A_j[o, r] = w[r - o, j]``. So an output element costs about ``K * (BH + 16) / BH`` loads instead of ``K * K``.
The input gradient is the same product with the kernel rotated by 180 degrees; the weight gradient accumulates
``G @ X_j^T`` over tiles in fp32 and reads the kernel off its diagonals, one partial sum per program, summed in a
fixed order (deterministic). With ``relu_input`` the ReLU before the convolution is applied as the input is loaded
and its mask when the input gradient is stored, so the rectified tensor never exists in memory.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .availability import OPERATORS_SUPPORTED, is_compiling, kernels_apply, runs_on, tl, triton

__all__ = ['depthwise_conv2d', 'fast_dwconv_applies']

# The input rows past a tile's BH that a kernel reaches: K - 1 <= TAIL, and tl.dot needs dimensions >= 16.
_TAIL = 16
MAX_KERNEL = _TAIL + 1


def fast_dwconv_applies(x: Tensor, kernel_size: int) -> bool:
    """Whether :func:`depthwise_conv2d` should replace ``F.conv2d`` for this input.

    Where :func:`~mmvanilla.ops.availability.kernels_apply` says so (an NCHW-contiguous CUDA tensor, the kernels on,
    not traced or compiled) and the kernel is odd and at most 17. A channels_last input stays with ``F.conv2d``:
    cuDNN takes depthwise convolutions in that layout.
    """
    return kernels_apply(x) and kernel_size % 2 == 1 and kernel_size <= MAX_KERNEL


if triton is not None:

    @triton.jit
    def _band(w_ptr, c, j, o, r, K: tl.constexpr, FLIP: tl.constexpr):
        """``A[o, r] = w[c, r - o, j]`` (``w[c, K-1-(r-o), K-1-j]`` with FLIP), zero off the band."""
        d = r[None, :] - o[:, None]
        if FLIP:
            idx = (K - 1 - d) * K + (K - 1 - j)
        else:
            idx = d * K + j
        return tl.load(w_ptr + c * K * K + idx, mask=(d >= 0) & (d < K), other=0.0)

    @triton.jit
    def _columns(group, tw, N, W, WT, NB, BW: tl.constexpr, PACKED: tl.constexpr):
        """A tile's columns: image ``n`` and column ``w`` of each, and whether it is in the batch.

        PACKED: ``NB`` images side by side (planes narrower than the tile), each ``WT`` wide. Otherwise one image
        and ``BW`` consecutive columns, which Triton then knows to be contiguous (vectorized, coalesced access).
        """
        if PACKED:
            k = tl.arange(0, BW)
            nn = k // WT
            n = group * NB + nn
            w = tw * WT + k % WT
            ok = (nn < NB) & (n < N) & (w < W)
        else:
            n = group
            w = tw * BW + tl.arange(0, BW)
            ok = w < W
        return n, w, ok

    @triton.jit
    def _window(ptr, c, n, rows, w, ok, sn, sc, sh, sw, H, W, RELU: tl.constexpr):
        """``x[n, c, rows, w]`` for a tile's columns, zero outside the plane (the convolution's padding)."""
        mask = ((rows >= 0) & (rows < H))[:, None] & (ok & (w >= 0) & (w < W))[None, :]
        offsets = (n.to(tl.int64) * sn + c.to(tl.int64) * sc + w * sw)[None, :] + rows[:, None] * sh
        x = tl.load(ptr + offsets, mask=mask, other=0.0)
        if RELU:
            x = tl.maximum(x, 0.0).to(x.dtype)
        return x

    @triton.jit
    def _mma(a, b, IEEE: tl.constexpr):
        """``a @ b`` summed in fp32; IEEE: products in fp32 too (not TF32)."""
        if IEEE:
            out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision='ieee')
        else:
            out = tl.dot(a, b)
        return out

    @triton.jit
    def _dw_conv_kernel(x_ptr, w_ptr, b_ptr, gate_ptr, y_ptr, N, C, H, W, WT, NB, tiles_h, tiles_w,
                        sxn, sxc, sxh, sxw, syn, syc, syh, syw, sgn, sgc, sgh, sgw,
                        K: tl.constexpr, FLIP: tl.constexpr, RELU_IN: tl.constexpr, HAS_BIAS: tl.constexpr,
                        GATE: tl.constexpr, IEEE: tl.constexpr, HAS_TAIL: tl.constexpr, PACKED: tl.constexpr,
                        BH: tl.constexpr, BW: tl.constexpr, TAIL: tl.constexpr):
        """``y = conv(x, w) + b`` over one ``BH x BW`` tile of one channel (stride 1, padding K // 2).

        FLIP rotates the kernel (the input gradient: ``x`` is then the output gradient); GATE zeroes the result
        where ``gate <= 0`` (the ReLU's gradient mask); RELU_IN rectifies ``x`` as it is loaded. Neighbouring
        programs take neighbouring tiles of one plane, so the rows they share are still in the L2 cache.
        """
        pid = tl.program_id(0)
        tw = pid % tiles_w
        th = pid // tiles_w % tiles_h
        c = pid // (tiles_w * tiles_h) % C
        group = pid // (tiles_w * tiles_h * C)
        P: tl.constexpr = K // 2
        h0 = th * BH
        n, w, ok = _columns(group, tw, N, W, WT, NB, BW, PACKED)
        o = tl.arange(0, BH)
        r = tl.arange(0, BH)
        t = tl.arange(0, TAIL) + BH
        acc = tl.zeros((BH, BW), dtype=tl.float32)
        for j in tl.static_range(K):
            x_main = _window(x_ptr, c, n, h0 - P + r, w + (j - P), ok, sxn, sxc, sxh, sxw, H, W, RELU_IN)
            acc += _mma(_band(w_ptr, c, j, o, r, K, FLIP).to(x_main.dtype), x_main, IEEE)
            if HAS_TAIL:
                x_tail = _window(x_ptr, c, n, h0 - P + t, w + (j - P), ok, sxn, sxc, sxh, sxw, H, W, RELU_IN)
                acc += _mma(_band(w_ptr, c, j, o, t, K, FLIP).to(x_main.dtype), x_tail, IEEE)
        if HAS_BIAS:
            acc += tl.load(b_ptr + c).to(tl.float32)
        rows = h0 + o
        mask = (rows < H)[:, None] & ok[None, :]
        col = (n.to(tl.int64) * syn + c.to(tl.int64) * syc + w * syw)[None, :]
        if GATE:
            g_col = (n.to(tl.int64) * sgn + c.to(tl.int64) * sgc + w * sgw)[None, :]
            gate = tl.load(gate_ptr + g_col + rows[:, None] * sgh, mask=mask, other=0.0)
            acc = tl.where(gate > 0, acc, 0.0)
        tl.store(y_ptr + col + rows[:, None] * syh, acc.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _dw_weight_grad_kernel(g_ptr, x_ptr, dw_ptr, N, C, H, W, WT, NB, tiles_h, tiles_w, splits,
                               sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                               K: tl.constexpr, RELU_IN: tl.constexpr, IEEE: tl.constexpr, HAS_TAIL: tl.constexpr,
                               PACKED: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, TAIL: tl.constexpr):
        """Partial sums of ``dw[c, i, j] = sum g[n, c, h, w] * x[n, c, h + i - P, w + j - P]``.

        Program ``(c * K + j, s)`` takes every ``splits``-th tile of channel c, accumulates ``M = G @ X_j^T`` (tile
        row o of the gradient against input row r) in fp32, and writes ``dw[s, c, i, j] = sum_o M[o, o + i]``.
        The K programs of one channel and split are launched side by side, so that they read its tiles from the
        L2 cache rather than K times from memory.
        """
        j = tl.program_id(0) % K
        c = tl.program_id(0) // K
        s = tl.program_id(1)
        P: tl.constexpr = K // 2
        o = tl.arange(0, BH)
        r = tl.arange(0, BH)
        t = tl.arange(0, TAIL) + BH
        m_main = tl.zeros((BH, BH), dtype=tl.float32)
        m_tail = tl.zeros((BH, TAIL), dtype=tl.float32)
        for tile in range(s, tl.cdiv(N, NB) * tiles_h * tiles_w, splits):
            tw = tile % tiles_w
            h0 = tile // tiles_w % tiles_h * BH
            n, w, ok = _columns(tile // (tiles_w * tiles_h), tw, N, W, WT, NB, BW, PACKED)
            g = _window(g_ptr, c, n, h0 + o, w, ok, sgn, sgc, sgh, sgw, H, W, False)
            x_main = _window(x_ptr, c, n, h0 - P + r, w + (j - P), ok, sxn, sxc, sxh, sxw, H, W, RELU_IN)
            m_main += _mma(g, tl.trans(x_main), IEEE)
            if HAS_TAIL:
                x_tail = _window(x_ptr, c, n, h0 - P + t, w + (j - P), ok, sxn, sxc, sxh, sxw, H, W, RELU_IN)
                m_tail += _mma(g, tl.trans(x_tail), IEEE)
        d_main = r[None, :] - o[:, None]
        d_tail = t[None, :] - o[:, None]
        out = dw_ptr + (s.to(tl.int64) * C + c) * K * K + j
        for i in tl.static_range(K):
            total = tl.sum(tl.sum(tl.where(d_main == i, m_main, 0.0), axis=1), axis=0)
            if HAS_TAIL:
                total += tl.sum(tl.sum(tl.where(d_tail == i, m_tail, 0.0), axis=1), axis=0)
            tl.store(out + i * K, total)


# Tile and launch settings, chosen by sweeps on an H100 (fp16, VanillaNet's detection and classification stage
# shapes): 16-row tiles for the convolutions, narrower ones for narrow planes. The weight gradient takes 64-row tiles
# of planes taller than 32 rows (VanillaNet-13's detection stages at strides 4-16; at stride 16, 50 x 76, forward +
# backward took 3.0 ms in a run with them, 3.8 ms in a later run with 16-row ones), 16-row tiles below.
def _conv_config(H: int, W: int, K: int) -> dict:
    """Tile and launch settings of :func:`_dw_conv_kernel` for an ``H x W`` plane."""
    return dict(BH=16, BW=32, num_warps=4) if W <= 64 else dict(BH=16, BW=64, num_warps=8)


def _weight_grad_config(H: int, W: int, K: int) -> dict:
    """Tile and launch settings of :func:`_dw_weight_grad_kernel`, and how many programs to aim for."""
    return dict(BH=64 if H > 32 else 16, BW=64, num_warps=4, num_stages=3, programs=1024)


def _tiling(N: int, H: int, W: int, K: int, BH: int, BW: int) -> tuple[dict, dict]:
    """How ``BH x BW`` tiles cover the batch (planes narrower than a tile share it, ``NB`` images side by side),
    and the kernels' flags: whether the ``TAIL`` rows past a tile are needed (not when one tile holds the plane and
    its padding), whether planes are packed."""
    wt = min(W, BW)
    tiles_h = triton.cdiv(H, BH)
    return (dict(WT=wt, NB=BW // wt, tiles_h=tiles_h, tiles_w=triton.cdiv(W, wt)),
            dict(HAS_TAIL=tiles_h > 1 or H + K // 2 > BH, PACKED=BW // wt > 1))


def _fp32_dot(x: Tensor) -> bool:
    """Products in fp32 (IEEE, not TF32): for fp32 inputs, and for bf16 ones under Triton's interpreter (CPU
    tensors), whose bf16 ``tl.dot`` is wrong; bf16 values and their products are exact in fp32 either way."""
    return x.dtype == torch.float32 or (x.device.type == 'cpu' and x.dtype == torch.bfloat16)


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, flip: bool, relu_input: bool,
          gate: Tensor | None) -> Tensor:
    N, C, H, W = x.shape
    K = weight.shape[-1]
    y = torch.empty_like(x)
    cfg = _conv_config(H, W, K)
    tiling, flags = _tiling(N, H, W, K, cfg['BH'], cfg['BW'])
    w = weight.reshape(C, K * K).contiguous()
    b = bias.contiguous() if bias is not None else w
    g = gate if gate is not None else x
    grid = (triton.cdiv(N, tiling['NB']) * C * tiling['tiles_h'] * tiling['tiles_w'],)
    _dw_conv_kernel[grid](x, w, b, g, y, N, C, H, W, *tiling.values(), *x.stride(), *y.stride(), *g.stride(),
                          K=K, FLIP=flip, RELU_IN=relu_input, HAS_BIAS=bias is not None, GATE=gate is not None,
                          IEEE=_fp32_dot(x), TAIL=_TAIL, **flags, **cfg)
    return y


def _weight_grad(grad: Tensor, x: Tensor, K: int, relu_input: bool) -> Tensor:
    N, C, H, W = x.shape
    cfg = _weight_grad_config(H, W, K)
    programs = cfg.pop('programs')
    tiling, flags = _tiling(N, H, W, K, cfg['BH'], cfg['BW'])
    tiles = triton.cdiv(N, tiling['NB']) * tiling['tiles_h'] * tiling['tiles_w']
    # Enough programs to fill the GPU; each writes one partial sum, added up below in a fixed order.
    splits = max(1, min(tiles, -(-programs // (C * K))))
    dw = torch.empty(splits, C, K, K, device=x.device, dtype=torch.float32)
    _dw_weight_grad_kernel[(C * K, splits)](grad, x, dw, N, C, H, W, *tiling.values(), splits, *grad.stride(),
                                            *x.stride(), K=K, RELU_IN=relu_input, IEEE=_fp32_dot(x),
                                            TAIL=_TAIL, **flags, **cfg)
    return dw.sum(0)


def _grads(grad: Tensor, x: Tensor, weight: Tensor, relu_input: bool, needs: Sequence[bool], input_grad: Callable,
           weight_grad: Callable) -> tuple:
    """The gradients of x, weight and bias that ``needs`` asks for, from the two backward kernels' functions."""
    grad_x = grad_w = grad_b = None
    if needs[0]:
        grad_x = input_grad(grad, weight, x, relu_input)
    if needs[1]:
        grad_w = weight_grad(grad, x, weight.shape[-1], relu_input).to(weight.dtype).reshape(weight.shape)
    if needs[2]:
        grad_b = grad.sum((0, 2, 3), dtype=torch.float32).to(weight.dtype)
    return grad_x, grad_w, grad_b


def _input_grad(grad: Tensor, weight: Tensor, x: Tensor, relu_input: bool) -> Tensor:
    """The convolution with the kernel rotated, masked where the ReLU cut ``x`` off."""
    return _conv(grad, weight, None, flip=True, relu_input=False, gate=x if relu_input else None)


class _DepthwiseConv2d(torch.autograd.Function):
    """The eager path: an autograd function straight over the kernels (less overhead per call than an operator)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, relu_input: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.relu_input = relu_input
        return _conv(x, weight, bias, flip=False, relu_input=relu_input, gate=None)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        return *_grads(grad, x, weight, ctx.relu_input, ctx.needs_input_grad, _input_grad, _weight_grad), None


# The same kernels as PyTorch operators, for torch.compile: a compiled graph calls them as opaque operators (their
# outputs' shapes known from the fake implementations below) and fuses the operations around them.
# Registered only where torch can (>= 2.4); the kernels are off on an older torch (.availability).
if OPERATORS_SUPPORTED:
    @torch.library.custom_op('mmvanilla::depthwise_conv2d', mutates_args=())
    def _depthwise_op(x: Tensor, weight: Tensor, bias: Tensor | None, relu_input: bool) -> Tensor:
        return _conv(x, weight, bias, flip=False, relu_input=relu_input, gate=None)

    @torch.library.custom_op('mmvanilla::depthwise_conv2d_input_grad', mutates_args=())
    def _input_grad_op(grad: Tensor, weight: Tensor, x: Tensor, relu_input: bool) -> Tensor:
        return _input_grad(grad, weight, x, relu_input)

    @torch.library.custom_op('mmvanilla::depthwise_conv2d_weight_grad', mutates_args=())
    def _weight_grad_op(grad: Tensor, x: Tensor, kernel_size: int, relu_input: bool) -> Tensor:
        return _weight_grad(grad, x, kernel_size, relu_input)

    @_depthwise_op.register_fake
    def _(x, weight, bias, relu_input):
        return torch.empty_like(x)

    @_input_grad_op.register_fake
    def _(grad, weight, x, relu_input):
        return torch.empty_like(grad)

    @_weight_grad_op.register_fake
    def _(grad, x, kernel_size, relu_input):
        return x.new_empty(x.shape[1], kernel_size, kernel_size, dtype=torch.float32)

    def _save_for_op_backward(ctx, inputs, output):
        x, weight, _, relu_input = inputs
        ctx.save_for_backward(x, weight)
        ctx.relu_input = relu_input

    def _op_backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return *_grads(grad, x, weight, ctx.relu_input, ctx.needs_input_grad, _input_grad_op, _weight_grad_op), None

    _depthwise_op.register_autograd(_op_backward, setup_context=_save_for_op_backward)


def _check(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if triton is None:
        raise RuntimeError('mmvanilla.ops.depthwise_conv2d needs Triton, which this PyTorch build lacks; use '
                           'F.conv2d(x, weight, bias, padding=k // 2, groups=channels) instead')
    if not runs_on(x.device):
        raise RuntimeError(f'mmvanilla.ops.depthwise_conv2d runs on CUDA tensors, got one on {x.device} (the CPU '
                           'runs it only under Triton\'s interpreter: TRITON_INTERPRET=1 before importing '
                           'mmvanilla); use F.conv2d(x, weight, bias, padding=k // 2, groups=channels) there')
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f'expected an (N, C, H, W) input and a (C, 1, k, k) weight, got {tuple(x.shape)} and '
                         f'{tuple(weight.shape)}')
    C, one, kh, kw = weight.shape
    if one != 1 or x.shape[1] != C or kh != kw or kh % 2 == 0 or kh > MAX_KERNEL:
        raise ValueError(f'depthwise_conv2d takes one square, odd k x k filter per channel (k <= {MAX_KERNEL}): '
                         f'weight (C, 1, k, k) with C = input channels; got input {tuple(x.shape)}, weight '
                         f'{tuple(weight.shape)}')
    if bias is not None and bias.shape != (C,):
        raise ValueError(f'bias must have shape ({C},), got {tuple(bias.shape)}')
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f'depthwise_conv2d supports float32, float16 and bfloat16, got {x.dtype}')
    if weight.dtype != x.dtype:
        raise TypeError(f'input ({x.dtype}) and weight ({weight.dtype}) must have the same dtype (under '
                        'torch.autocast both are cast to the autocast dtype)')
    if weight.device != x.device or (bias is not None and bias.device != x.device):
        raise ValueError(f'input, weight and bias must be on one device, got {x.device}, {weight.device}'
                         + (f', {bias.device}' if bias is not None else ''))


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, relu_input: bool = False) -> Tensor:
    """``F.conv2d(relu(x) if relu_input else x, weight, bias, padding=k // 2, groups=C)``, in Triton.

    Stride 1 and one odd ``k x k`` filter per channel, as in VanillaNet's series activation. Differentiable in
    ``x``, ``weight`` and ``bias``; sums in fp32 whatever the dtype (float32, float16, bfloat16); the weight
    gradient is deterministic. Under ``torch.autocast`` the input, weight and bias are cast to the autocast dtype,
    as ``F.conv2d`` would. Runs on CUDA tensors, and on CPU tensors under Triton's interpreter
    (``TRITON_INTERPRET=1`` set before Triton is imported), which the tests use.

    Args:
        x (Tensor): Input ``(N, C, H, W)``, any memory layout (NCHW is the fast one).
        weight (Tensor): Filters ``(C, 1, k, k)``, ``k`` odd, at most 17.
        bias (Tensor | None): ``(C,)``. Defaults to None.
        relu_input (bool): Rectify ``x`` first, inside the kernels (the rectified tensor is never stored).
            Defaults to False.

    Returns:
        Tensor: ``(N, C, H, W)``, in ``x``'s dtype and layout.
    """
    if x.is_cuda and torch.is_autocast_enabled('cuda'):
        dtype = torch.get_autocast_dtype('cuda')
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    _check(x, weight, bias)
    with torch.autocast('cuda', enabled=False):
        if is_compiling():
            return _depthwise_op(x, weight, bias, relu_input)
        return _DepthwiseConv2d.apply(x, weight, bias, relu_input)
