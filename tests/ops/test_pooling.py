"""The Triton max-pool against F.max_pool2d: values and gradients, ties and NaN, and what it keeps for backward.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
"""
import pytest
import torch
import torch.nn.functional as F

from mmvanilla import ops
from mmvanilla.benchmark import kept_for_backward_mb

from .test_depthwise import DEVICE, mmvanilla_ops, needs_triton


def pool_both(x, window, grad=None):
    """Output and input gradient of ops.max_pool2d and of F.max_pool2d."""
    results = []
    for pool in (ops.max_pool2d, F.max_pool2d):
        leaf = x.detach().clone().requires_grad_()
        y = pool(leaf, window)
        g = grad if grad is not None else torch.arange(y.numel(), device=y.device).reshape(y.shape).to(y.dtype)
        y.backward(g)
        results.append((y, leaf.grad))
    return results


LAYOUTS = {
    'nchw': lambda x: x,
    'channels_last': lambda x: x.contiguous(memory_format=torch.channels_last),
    'strided': lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),  # neither: the slow, general path
}


@needs_triton
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape,window', [((2, 3, 8, 12), 2), ((1, 2, 9, 11), 2), ((2, 2, 10, 7), 3)])
def test_matches_max_pool2d_exactly(shape, window, dtype, layout):
    x = LAYOUTS[layout](torch.randn(*shape, generator=torch.Generator().manual_seed(window)).to(DEVICE, dtype))
    (y, gx), (y_ref, gx_ref) = pool_both(x, window)
    assert y.dtype == dtype and torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref), 'each gradient at its maximum, zeros elsewhere (and past the last window)'
    if layout != 'strided':  # the output and the input gradient keep the input's layout, as PyTorch's
        assert y.stride() == y_ref.stride() and gx.stride() == gx_ref.stride()


@needs_triton
@pytest.mark.parametrize('shape,layout', [((1, 2, 70, 66), 'nchw'), ((1, 1030, 4, 6), 'channels_last')])
def test_planes_and_channels_beyond_one_program_are_pooled(shape, layout):
    # NCHW: a program takes up to 1024 outputs of a plane; channels_last: up to 1024 channels of a position.
    x = LAYOUTS[layout](torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(DEVICE))
    (y, gx), (y_ref, gx_ref) = pool_both(x, 2)
    assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)


@needs_triton
def test_equal_values_send_the_gradient_to_the_first_and_nan_wins_as_in_pytorch():
    x = torch.tensor([[1.0, 1.0, 0.0, -0.0, float('-inf'), float('-inf')],
                      [1.0, 0.5, 0.0, 0.0, float('-inf'), float('-inf')],
                      [2.0, float('nan'), 3.0, 1.0, float('nan'), 5.0],
                      [1.0, 7.0, 3.0, 3.0, 1.0, float('nan')]], device=DEVICE)[None, None]
    (y, gx), (y_ref, gx_ref) = pool_both(x, 2)
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    assert torch.equal(gx, gx_ref)


@needs_triton
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_it_keeps_one_byte_per_output_for_backward_not_the_input_and_int64_indices(layout):
    x = LAYOUTS[layout](torch.randn(2, 3, 8, 12, device=DEVICE)).requires_grad_()
    kept = kept_for_backward_mb(lambda: ops.max_pool2d(x, 2)) * 2**20
    kept_by_pytorch = kept_for_backward_mb(lambda: F.max_pool2d(x, 2)) * 2**20
    assert kept == 2 * 3 * 4 * 6  # int8 positions
    assert kept_by_pytorch == x.numel() * 4 + 2 * 3 * 4 * 6 * 8  # the input and int64 indices



@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_torch_compile_keeps_the_kernels_as_operators(layout):
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    x = LAYOUTS[layout](torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0)).to(DEVICE))
    (y_ref, gx_ref), _ = pool_both(x, 2)
    graphs = AotEagerAndRecordGraphs()
    leaf = x.clone().requires_grad_()
    y = torch.compile(lambda x: ops.max_pool2d(x, 2), backend=graphs, fullgraph=True)(leaf)
    y.backward(torch.arange(y.numel(), device=y.device).reshape(y.shape).to(y.dtype))
    assert mmvanilla_ops(graphs.fw_graphs[0]) == {'max_pool2d_with_positions'}
    assert mmvanilla_ops(graphs.bw_graphs[0]) == {'max_pool2d_backward'}
    assert torch.equal(y, y_ref) and torch.equal(leaf.grad, gx_ref)
    assert y.stride() == y_ref.stride() and leaf.grad.stride() == gx_ref.stride()
    torch._dynamo.reset()


@needs_triton
def test_bad_arguments_are_refused_with_the_fix():
    x = torch.randn(1, 2, 8, 8, device=DEVICE)
    with pytest.raises(ValueError, match='windows of 2 to 11'):
        ops.max_pool2d(x, 12)
    with pytest.raises(ValueError, match=r'\(N, C, H, W\) fp32, fp16 or bf16'):
        ops.max_pool2d(x[0], 2)


def test_the_kernel_applies_only_in_training_to_nchw_and_channels_last_cuda_tensors(monkeypatch):
    assert not ops.fast_max_pool_applies(torch.randn(1, 2, 4, 4, requires_grad=True), 2), 'CPU: F.max_pool2d'
    if not torch.cuda.is_available():
        pytest.skip('the CUDA cases need a GPU')
    x = torch.randn(1, 2, 4, 4, device='cuda', requires_grad=True)
    assert ops.fast_max_pool_applies(x, 2)
    assert not ops.fast_max_pool_applies(x.detach(), 2), 'no gradient: nothing to keep, PyTorch pools'
    assert ops.fast_max_pool_applies(LAYOUTS['channels_last'](x), 2)
    assert not ops.fast_max_pool_applies(LAYOUTS['strided'](x), 2), 'other layouts: F.max_pool2d'
    monkeypatch.setenv(ops.ENV_SWITCH, '0')
    assert not ops.fast_max_pool_applies(x, 2)
