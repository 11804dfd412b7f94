import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch.utils._python_dispatch import TorchDispatchMode

from mmvanilla.models import DeepTrainingConv, SeriesActivation
from mmvanilla.models.layers import _LeakyReLUKeepingOutput

from .test_fusion import randomized_bn


def randomize_bns(module):
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, randomized_bn(child.num_features))
        else:
            randomize_bns(child)
    return module


@pytest.mark.parametrize('lam', [0.0, 0.3, 1.0])
def test_deep_training_conv_is_conv_bn_leaky_relu_conv_bn(lam):
    layer = randomize_bns(DeepTrainingConv(4, 6, hidden_channels=4)).eval()
    layer.set_act_lambda(lam)
    x = torch.randn(2, 4, 5, 5)
    expected = layer.conv2(torch.nn.functional.leaky_relu(layer.conv1(x), lam))
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize('lam', [0.0, 0.3, 1.0])
def test_deep_training_conv_gradients_are_those_of_leaky_relu(lam):
    layer = randomize_bns(DeepTrainingConv(4, 6, hidden_channels=5)).train()
    layer.set_act_lambda(lam)
    reference = copy.deepcopy(layer)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 6, 5, 5)
    layer(x).backward(grad)
    reference.conv2(F.leaky_relu(reference.conv1(x_ref), lam)).backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for (name, p), p_ref in zip(layer.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)


@pytest.mark.parametrize('lam', [0.0, 0.3, 1.0])
def test_leaky_relu_gradient_is_exact_at_zero_and_below(lam):
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    _LeakyReLUKeepingOutput.apply(x, lam).backward(torch.full((5,), 2.0))
    F.leaky_relu(x_ref, lam).backward(torch.full((5,), 2.0))
    assert torch.equal(x.grad, x_ref.grad)


def test_deep_training_conv_keeps_four_activations_for_backward_not_its_norms_output():
    # conv1's input and output, the leaky ReLU's output (conv2's input) and conv2's output; the first norm's output
    # (the leaky ReLU's input) is not kept: a training step holds one activation fewer per layer.
    layer = DeepTrainingConv(4, 6, hidden_channels=5).train()
    layer.set_act_lambda(0.5)
    x = torch.randn(2, 4, 7, 9, requires_grad=True)
    kept = {}

    def pack(t):
        if t.shape[-2:] == (7, 9):
            kept[t.untyped_storage().data_ptr()] = t.grad_fn.name() if t.grad_fn else 'input'
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    assert sorted(kept.values()) == sorted(['input', 'ConvolutionBackward0', '_LeakyReLUKeepingOutputBackward',
                                            'ConvolutionBackward0'])
    out.sum().backward()  # the kept tensors suffice


def autograd_node_names(out):
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node.name() not in seen:
            seen.add(node.name())
            todo.extend(next_node for next_node, _ in node.next_functions)
    return seen


@pytest.mark.parametrize('lam', [0.0, 0.5, 1.0])
def test_deep_training_conv_skips_the_leaky_relu_exactly_when_lambda_is_one(lam):
    # At lambda = 1 the leaky ReLU is the identity: neither training nor inference spends a pass on it.
    layer = DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=lam)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert ('_LeakyReLUKeepingOutputBackward' in autograd_node_names(layer.train()(x))) == (lam < 1)
    with mock.patch.object(F, 'leaky_relu', wraps=F.leaky_relu) as leaky_relu, torch.no_grad():
        layer.eval()(x)
    assert leaky_relu.called == (lam < 1)


class _OpsRun(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_deep_training_conv_backward_computes_no_slope_gradient():
    # lambda is a buffer, not a parameter: PReLU's backward would also write an elementwise gradient of the slope,
    # a pass over the activation that nothing reads; the leaky ReLU's backward computes the input's gradient only.
    layer = DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=0.5).train()
    out = layer(torch.randn(2, 4, 5, 5, requires_grad=True))
    with _OpsRun() as ops:
        out.sum().backward()
    assert 'aten.leaky_relu_backward' in ops.names
    assert not any('prelu' in name for name in ops.names)


def test_a_traced_deep_training_conv_takes_lambda_from_its_buffer():
    # A traced (or exported) graph keeps the slope as the buffer, so a state dict loaded into it still sets lambda.
    layer = randomize_bns(DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=0.3)).eval()
    x = torch.randn(2, 4, 5, 5)
    traced = torch.jit.trace(layer, x)
    traced.load_state_dict({**layer.state_dict(), 'act_lambda': torch.full((1,), 0.6)})
    torch.testing.assert_close(traced(x), layer.conv2(F.leaky_relu(layer.conv1(x), 0.6)))


@pytest.mark.parametrize('load', [torch.nn.Module.load_state_dict, mmengine_load_state_dict],
                         ids=['torch', 'mmengine'])
@pytest.mark.parametrize('built, loaded', [(1.0, 0.5), (0.5, 1.0), (1.0, 0.0)])
def test_lambda_loaded_from_a_checkpoint_decides_whether_the_leaky_relu_runs(load, built, loaded):
    trained = randomize_bns(DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=loaded)).eval()
    layer = DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=built).eval()
    load(layer, trained.state_dict())
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), layer.conv2(F.leaky_relu(layer.conv1(x), loaded)))
    assert layer.get_act_lambda() == loaded


def test_a_compiled_deep_training_conv_follows_lambda_in_and_out_of_one():
    layer = randomize_bns(DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=1.0)).eval()
    compiled = torch.compile(layer, backend='eager', fullgraph=True)
    x = torch.randn(2, 4, 5, 5)
    for lam in (1.0, 0.5, 1.0, 0.0):
        layer.set_act_lambda(lam)
        torch.testing.assert_close(compiled(x), layer.conv2(F.leaky_relu(layer.conv1(x), lam)))


def test_a_compiled_deep_training_conv_does_not_recompile_as_lambda_anneals():
    compiles = []

    def backend(graph, example_inputs):
        compiles.append(graph)
        return graph.forward
    layer = DeepTrainingConv(4, 6, hidden_channels=5, act_lambda=0.0).train()
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    for lam in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        layer.set_act_lambda(lam)
        compiled(x).sum().backward()
    assert len(compiles) <= 2, 'dynamo makes the slope an input after its first change'
    torch._dynamo.reset()


def test_a_checkpoint_with_lambda_outside_zero_one_is_refused_even_by_a_non_strict_load():
    layer = DeepTrainingConv(4, 4, hidden_channels=4)
    state = {**layer.state_dict(), 'act_lambda': torch.tensor([-0.5])}
    with pytest.raises(ValueError, match=r'act_lambda: .*lambda=-0\.5, outside \[0, 1\]'):
        layer.load_state_dict(state, strict=False)


def test_deep_training_conv_switches_exactly_and_idempotently():
    layer = randomize_bns(DeepTrainingConv(3, 8, hidden_channels=8, kernel_size=4, stride=4)).eval()
    layer.set_act_lambda(1.0)
    x = torch.randn(2, 3, 16, 16)
    before = layer(x)
    layer.switch_to_deploy()
    layer.switch_to_deploy()
    assert layer.deployed and set(layer.state_dict()) == {'conv.weight', 'conv.bias'}
    torch.testing.assert_close(layer(x), before, rtol=1e-4, atol=1e-5)


def test_deep_training_conv_refuses_to_fuse_below_lambda_one_and_keeps_its_weights():
    layer = DeepTrainingConv(4, 4, hidden_channels=4)
    layer.set_act_lambda(0.5)
    keys = set(layer.state_dict())
    with pytest.raises(RuntimeError, match=r'lambda=0\.5.*exactly only at lambda=1'):
        layer.switch_to_deploy()
    assert set(layer.state_dict()) == keys and not layer.deployed


@pytest.mark.parametrize('bad', [-0.1, 1.5])
def test_lambda_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        DeepTrainingConv(4, 4, hidden_channels=4).set_act_lambda(bad)


def test_switch_builds_fresh_parameters_under_no_grad():
    layer = DeepTrainingConv(4, 4, hidden_channels=4)
    layer.set_act_lambda(1.0)
    old = {id(p) for p in layer.parameters()}
    with torch.no_grad():
        layer.switch_to_deploy()
    assert all(p.requires_grad and id(p) not in old for p in layer.parameters())


def test_series_activation_folds_its_bn_into_a_biased_depthwise_conv():
    act = randomize_bns(SeriesActivation(6, act_num=2)).eval()
    assert act.conv.kernel_size == (5, 5) and act.conv.bias is None
    x = torch.randn(2, 6, 7, 7)
    before = act(x)
    act.switch_to_deploy()
    act.switch_to_deploy()
    assert set(act.state_dict()) == {'conv.weight', 'conv.bias'}
    torch.testing.assert_close(act(x), before, rtol=1e-4, atol=1e-5)


def test_norms_that_cannot_be_folded_are_refused():
    with pytest.raises(ValueError, match="norm_cfg.type='GN'.*must be a BatchNorm type; set norm_cfg.type='BN'"):
        SeriesActivation(4, norm_cfg=dict(type='GN', num_groups=2))


@pytest.mark.parametrize('deploy', [False, True])
def test_series_activation_fast_path_computes_the_same_function(deploy, monkeypatch):
    """The Triton path (forced here; on a CPU through Triton's interpreter) against F.relu + nn.Conv2d."""
    from mmvanilla import ops
    if not ops.triton_available():
        pytest.skip('needs Triton')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    act = randomize_bns(SeriesActivation(3, act_num=2, deploy=deploy)).to(device).train()
    x = torch.randn(2, 3, 9, 10, device=device, requires_grad=True)
    slow = act(x)
    grads_slow = torch.autograd.grad(slow.square().sum(), [x, *act.parameters()])
    monkeypatch.setattr('mmvanilla.models.layers.fast_dwconv_applies', lambda x, k: True)
    fast = act(x)
    grads_fast = torch.autograd.grad(fast.square().sum(), [x, *act.parameters()])
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_fast, grads_slow):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    act.fast_dwconv = False
    monkeypatch.setattr('mmvanilla.models.layers.depthwise_conv2d', None)  # would raise if it were called
    torch.testing.assert_close(act(x), slow)


def test_series_activation_scripts_and_traces_with_the_plain_convolution():
    act = SeriesActivation(3, act_num=1, deploy=True).eval()
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(torch.jit.script(act)(x), act(x))
    torch.testing.assert_close(torch.jit.trace(act, x)(x), act(x))
