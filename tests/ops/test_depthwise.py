"""The Triton depthwise convolution against F.conv2d: values and gradients, every dtype, odd shapes.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); with one, on CUDA tensors.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from mmvanilla import ops
from mmvanilla.ops import depthwise as dw

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
needs_triton = pytest.mark.skipif(
    not ops.triton_available() or (DEVICE == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1'),
    reason='needs Triton, on a GPU or through its interpreter')
# Relative to the largest reference value: fp32 sums in fp32 like cuDNN; fp16/bf16 inputs are rounded once.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def reference(x, weight, bias, relu_input, grad):
    """F.conv2d in float64: the output and the gradients of x, weight and bias."""
    x, weight = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    bias = bias.detach().double().requires_grad_() if bias is not None else None
    y = F.conv2d(F.relu(x) if relu_input else x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1])
    grads = torch.autograd.grad(y, [t for t in (x, weight, bias) if t is not None], grad.double())
    return y, grads


def check(shape, kernel, dtype=torch.float32, relu_input=True, with_bias=True, memory_format=None):
    gen = torch.Generator().manual_seed(sum(shape) + kernel)
    x = torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    x.requires_grad_()
    weight = (torch.randn(shape[1], 1, kernel, kernel, generator=gen) / kernel).to(DEVICE, dtype).requires_grad_()
    bias = torch.randn(shape[1], generator=gen).to(DEVICE, dtype).requires_grad_() if with_bias else None
    y = ops.depthwise_conv2d(x, weight, bias, relu_input=relu_input)
    grad = torch.randn(y.shape, generator=gen).to(DEVICE, dtype)
    grads = torch.autograd.grad(y, [t for t in (x, weight, bias) if t is not None], grad)
    ref_y, ref_grads = reference(x, weight, bias, relu_input, grad)
    assert y.dtype == dtype and y.shape == x.shape
    for name, got, want in zip(['output', 'grad x', 'grad weight', 'grad bias'], (y, *grads), (ref_y, *ref_grads)):
        assert got.dtype == dtype, name
        err = (got.double() - want).abs().max().item() / want.abs().max().item()
        assert err < TOLERANCE[dtype], f'{name}: relative error {err:.2e} for {shape}, k={kernel}, {dtype}'


@needs_triton
@pytest.mark.parametrize('kernel', [1, 3, 5, 7, 9, 11])
def test_matches_conv2d_in_fp32_for_every_odd_kernel(kernel):
    check((2, 3, 13, 19), kernel)


@needs_triton
@pytest.mark.parametrize('relu_input,with_bias', [(False, True), (True, False), (False, False)])
def test_relu_input_and_bias_are_optional(relu_input, with_bias):
    check((2, 2, 9, 11), 3, relu_input=relu_input, with_bias=with_bias)


@needs_triton
@pytest.mark.parametrize('shape,kernel', [
    ((5, 2, 7, 5), 7),      # planes narrower than a tile: several images share one
    ((1, 2, 37, 20), 9),    # more rows than a tile: the rows below it are read
    ((2, 1, 3, 70), 5),     # more columns than a tile, fewer rows than the kernel
])
def test_matches_conv2d_across_tile_boundaries(shape, kernel):
    check(shape, kernel)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_within_its_rounding(dtype):
    check((2, 3, 17, 21), 9, dtype=dtype)


@needs_triton
def test_any_memory_layout_gives_the_same_result():
    check((2, 4, 6, 7), 3, memory_format=torch.channels_last)


@needs_triton
def test_weight_gradient_is_deterministic():
    x = torch.randn(3, 2, 20, 24, device=DEVICE, requires_grad=True)
    weight = torch.randn(2, 1, 5, 5, device=DEVICE, requires_grad=True)
    grads = [torch.autograd.grad(ops.depthwise_conv2d(x, weight, relu_input=True).square().sum(), weight)[0]
             for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


@needs_triton
def test_fp16_weight_gradient_sums_in_fp32():
    # 4 x 64 x 64 products of 1 per weight: an fp16 running sum would stop growing at 2048 (2048 + 1 rounds to 2048)
    x = torch.ones(4, 1, 64, 64, device=DEVICE, dtype=torch.float16, requires_grad=True)
    weight = torch.ones(1, 1, 3, 3, device=DEVICE, dtype=torch.float16, requires_grad=True)
    grad_w, = torch.autograd.grad(ops.depthwise_conv2d(x, weight).sum(), weight)
    # The centre tap sees every pixel once; a corner misses one row and one column (then rounded to fp16 once).
    assert grad_w[0, 0, 1, 1].item() == 4 * 64 * 64
    assert grad_w[0, 0, 0, 0].item() == torch.tensor(4 * 63 * 63.0).half().item()



def mmvanilla_ops(graph_module) -> set[str]:
    """The mmvanilla operators a compiled graph calls."""
    return {str(node.target).split('.')[1] for node in graph_module.graph.nodes
            if str(node.target).startswith('mmvanilla.')}


@pytest.mark.slow
@needs_triton
def test_torch_compile_keeps_the_kernels_as_operators():
    """Compiled, the convolution is one operator forward and two backward, with the eager values and gradients."""
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 11, generator=gen).to(DEVICE).requires_grad_()
    weight = torch.randn(3, 1, 5, 5, generator=gen).to(DEVICE).requires_grad_()
    bias = torch.randn(3, generator=gen).to(DEVICE).requires_grad_()

    def forward(x, weight, bias):
        return ops.depthwise_conv2d(x * 2, weight, bias, relu_input=True)

    def step(forward):
        y = forward(x, weight, bias)
        return y, *torch.autograd.grad(y.square().sum(), [x, weight, bias])
    eager = step(forward)
    graphs = AotEagerAndRecordGraphs()
    compiled = step(torch.compile(forward, backend=graphs, fullgraph=True))
    assert mmvanilla_ops(graphs.fw_graphs[0]) == {'depthwise_conv2d'}
    assert mmvanilla_ops(graphs.bw_graphs[0]) == {'depthwise_conv2d_input_grad', 'depthwise_conv2d_weight_grad'}
    for got, want in zip(compiled, eager):
        assert torch.equal(got, want)
    torch._dynamo.reset()
    # inductor (as on a GPU) generates the code around the operators: the multiplication, the sums
    for got, want in zip(step(torch.compile(forward, fullgraph=True)), eager):
        torch.testing.assert_close(got, want)
    torch._dynamo.reset()

@needs_triton
def test_bad_arguments_are_refused_with_the_fix():
    x = torch.randn(1, 4, 8, 8, device=DEVICE)
    with pytest.raises(ValueError, match='odd'):
        ops.depthwise_conv2d(x, torch.randn(4, 1, 4, 4, device=DEVICE))
    with pytest.raises(ValueError, match='one square, odd'):
        ops.depthwise_conv2d(x, torch.randn(4, 2, 3, 3, device=DEVICE))
    with pytest.raises(TypeError, match='same dtype'):
        ops.depthwise_conv2d(x, torch.randn(4, 1, 3, 3, device=DEVICE, dtype=torch.float16))
    with pytest.raises(ValueError, match=r'bias must have shape \(4,\)'):
        ops.depthwise_conv2d(x, torch.randn(4, 1, 3, 3, device=DEVICE), torch.randn(3, device=DEVICE))


def test_the_kernel_applies_only_to_nchw_cuda_tensors_outside_traces_and_exports(monkeypatch):
    assert not ops.fast_dwconv_applies(torch.randn(1, 2, 5, 5), 3), 'a CPU tensor uses F.conv2d'
    if not torch.cuda.is_available():
        pytest.skip('the CUDA cases need a GPU')
    x = torch.randn(1, 2, 5, 5, device='cuda')
    assert ops.fast_dwconv_applies(x, 3)
    assert not ops.fast_dwconv_applies(x.contiguous(memory_format=torch.channels_last), 3)
    assert not ops.fast_dwconv_applies(x, 4)
    compiled = torch.compile(lambda x: torch.tensor(ops.fast_dwconv_applies(x, 3)), backend='eager', fullgraph=True)
    assert compiled(x), 'torch.compile keeps the kernel (as an operator)'

    class Applies(torch.nn.Module):
        def forward(self, x):
            assert not ops.fast_dwconv_applies(x, 3), 'an exported graph holds PyTorch operators only'
            return x
    torch.export.export(Applies(), (x,))
    monkeypatch.setenv(ops.ENV_SWITCH, '0')
    assert not ops.fast_dwconv_applies(x, 3)
