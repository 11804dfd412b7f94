import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope

import mmvanilla  # noqa: F401  (registers VanillaNet)
from mmvanilla.models import ARCH_SETTINGS, VanillaNet

from .test_layers import randomize_bns

TINY = dict(stem_channels=8, widths=[8, 16, 16, 32, 32], strides=[1, 2, 2, 2, 1])

# Deploy-form backbone parameters (act_num 3) from the paper's architectures, in millions.
PAPER_BACKBONE_PARAMS = {'5': 11.43, '6': 28.41, '9': 37.30, '13': 54.49, '13_x1_5': 121.65}


def count_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('arch', list(PAPER_BACKBONE_PARAMS))
def test_deploy_form_parameter_counts_match_the_paper(arch):
    millions = count_params(VanillaNet(arch, deploy=True)) / 1e6
    assert millions == pytest.approx(PAPER_BACKBONE_PARAMS[arch], rel=0.005)


@pytest.mark.slow
def test_every_arch_builds_from_the_registry_with_channels_doubling_per_stage():
    for arch in ARCH_SETTINGS:
        with DefaultScope.overwrite_default_scope('mmdet'):
            net = MODELS.build(dict(type='VanillaNet', arch=arch, out_indices=(0, 1, 2, 3), deploy=True))
        scale = 1.5 if 'x1_5' in arch else 1
        assert net.out_channels == tuple(int(c * scale) for c in (512, 1024, 2048, 4096)), arch


def test_vanillanet13_feature_shapes_at_strides_4_8_16_32():
    net = VanillaNet('13', out_indices=(0, 1, 2, 3), deploy=True).eval()
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 224, 224))
    assert isinstance(feats, tuple)
    assert [tuple(f.shape[1:]) for f in feats] == [(512, 56, 56), (1024, 28, 28), (2048, 14, 14), (4096, 7, 7)]
    assert net.out_channels == (512, 1024, 2048, 4096)


def test_vanillanet5_stage0_is_the_stem_output():
    net = VanillaNet('5', out_indices=(0, 1, 2, 3), deploy=True).eval()
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(512, 16, 16), (1024, 8, 8), (2048, 4, 4), (4096, 2, 2)]


def test_ada_pool_variant_uses_a_stride_3_stem_and_fixed_pool_sizes():
    net = VanillaNet('13_x1_5_ada_pool', out_indices=(0, 1, 2, 3), deploy=True).eval()
    with torch.no_grad():
        feats = net(torch.rand(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(768, 75, 75), (1536, 38, 38), (3072, 19, 19), (6144, 10, 10)]


def test_default_out_indices_feed_retinanet_fpn():
    net = VanillaNet(TINY).eval()
    feats = net(torch.rand(2, 3, 64, 64))
    assert [f.shape[1:] for f in feats] == [(16, 8, 8), (16, 4, 4), (32, 2, 2)]
    assert net.out_channels == (16, 16, 32)


@pytest.mark.parametrize('arch, act_num', [('5', 3), ('9', 4), ('13', 1)])
def test_deploy_form_equals_training_form_at_lambda_one(arch, act_num):
    torch.manual_seed(0)
    net = randomize_bns(VanillaNet(arch, act_num=act_num, out_indices=(0, 1, 2, 3))).eval()
    net.set_act_lambda(1.0)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = net(x)
        net.switch_to_deploy()
        after = net(x)
    for a, b in zip(before, after):
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-4


def test_converted_state_dict_loads_strictly_into_a_deploy_built_model():
    net = VanillaNet(TINY, act_num=2, act_lambda=1.0)
    net.switch_to_deploy()
    built = VanillaNet(TINY, act_num=2, deploy=True)
    built.load_state_dict(net.state_dict(), strict=True)
    assert list(net.state_dict()) == list(built.state_dict())


def test_switch_to_deploy_refuses_below_lambda_one_and_changes_nothing():
    net = VanillaNet(TINY)
    net.set_act_lambda(0.75)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match='lambda=0.75'):
        net.switch_to_deploy()
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_switch_to_deploy_is_idempotent():
    net = VanillaNet(TINY, act_lambda=1.0)
    net.switch_to_deploy()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.switch_to_deploy()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_lambda_starts_at_zero_and_set_act_lambda_reaches_every_layer():
    net = VanillaNet(TINY)
    assert net.get_act_lambda() == 0.0
    net.set_act_lambda(0.4)
    lambdas = [float(b) for name, b in net.named_buffers() if name.endswith('act_lambda')]
    assert len(lambdas) == 1 + len(TINY['widths']) and lambdas == pytest.approx([0.4] * len(lambdas))
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        net.set_act_lambda(1.2)


def test_lambda_travels_in_the_state_dict():
    net = VanillaNet(TINY)
    net.set_act_lambda(0.6)
    other = VanillaNet(TINY)
    other.load_state_dict(net.state_dict())
    assert other.get_act_lambda() == pytest.approx(0.6)


def test_loading_a_training_form_checkpoint_into_a_deploy_model_is_refused():
    trained = VanillaNet(TINY)
    trained.set_act_lambda(0.5)
    with pytest.raises(RuntimeError, match=r'training-form checkpoint of stem.layer into a deploy-form model.*'
                                           r'lambda=0.5.*DeepTrainingHook'):
        VanillaNet(TINY, deploy=True).load_state_dict(trained.state_dict(), strict=False)


def test_frozen_stages_stop_gradients_and_stay_in_eval_mode():
    net = VanillaNet(TINY, frozen_stages=1)
    net.train()
    frozen = [net.stem, *net.blocks[:net.stage_ends[1] + 1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for m in frozen)
    assert all(p.requires_grad for p in net.blocks[-1].parameters())
    net.set_act_lambda(1.0)
    net.switch_to_deploy()
    assert all(not p.requires_grad for m in frozen for p in m.parameters())


def test_norm_eval_keeps_batchnorms_in_eval_mode():
    net = VanillaNet(TINY, norm_eval=True).train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)


def test_syncbn_config_is_accepted():
    net = VanillaNet(TINY, norm_cfg=dict(type='SyncBN', eps=1e-6))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(arch='14'), KeyError, r"unknown VanillaNet arch '14'; valid names: 5, 6, 7"),
    (dict(arch=dict(stem_channels=8, widths=[8, 16], strides=[2])), ValueError, 'equal length'),
    (dict(arch=dict(stem_channels=8, widths=[8], strides=[2], depth=3)), KeyError, r"unknown keys \['depth'\]"),
    (dict(arch=TINY, out_indices=(4,)), ValueError, r'out_indices \(4,\) out of range.*0\.\.3'),
    (dict(arch=TINY, frozen_stages=4), ValueError, r'frozen_stages=4 out of range'),
    (dict(arch=TINY, act_num=-1), ValueError, 'act_num must be an integer >= 0'),
    (dict(arch=TINY, out_indices=(3, 1, 2)), ValueError,
     r'out_indices \(3, 1, 2\) must be increasing, each stage once \(e.g. \(1, 2, 3\)\).*wrong strides'),
    (dict(arch=TINY, out_indices=(1, 1)), ValueError, r'must be increasing, each stage once \(e.g. \(1,\)\)'),
])
def test_bad_arguments_name_the_value_and_the_valid_ones(kwargs, error, message):
    with pytest.raises(error, match=message):
        VanillaNet(**kwargs)


@pytest.mark.parametrize('arch, smallest', [('5', 32), (TINY, 32),
                                            (dict(stem_channels=8, widths=[8] * 4, strides=[2] * 4), 64)])
def test_an_input_smaller_than_the_total_stride_is_refused_with_the_smallest_size(arch, smallest):
    net = VanillaNet(arch, deploy=True).eval()
    assert net.min_input_size == smallest
    with pytest.raises(ValueError, match=f'an input of 8x{smallest} pixels is too small for this VanillaNet: it '
                                         f'downsamples by {smallest}, so height and width must be at least {smallest}'):
        net(torch.rand(1, 3, 8, smallest))
    with pytest.raises(ValueError, match=r'takes images as a \(batch, 3, height, width\) tensor, got shape \(3, 64'):
        net(torch.rand(3, 64, 64))
    net(torch.rand(1, 3, smallest, smallest))  # the smallest is taken


@pytest.mark.parametrize('saved_as', ['bare', 'model'])
def test_a_whole_models_checkpoint_loads_into_the_backbone_itself(saved_as):
    """As ``init_cfg=dict(type='Pretrained', checkpoint=...)`` without a prefix loads it: a classifier's (timm's
    ``vanillanet_*``, bare or under ``model``) or a detector's weights are under ``backbone.``; the rest is left
    out."""
    from mmvanilla.models import VanillaNetClassifier
    classifier = VanillaNetClassifier(TINY, num_classes=7, act_lambda=1.0)
    randomize_bns(classifier)
    backbone = VanillaNet(TINY)
    weights = classifier.state_dict()
    backbone.load_state_dict(weights if saved_as == 'bare' else {'model': weights}, strict=False)
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


def test_a_checkpoint_that_gives_the_backbone_no_weight_is_refused():
    with pytest.raises(ValueError, match=r'the checkpoint holds no weight of this VanillaNet \(its keys: encoder.w'):
        VanillaNet(TINY).load_state_dict({'encoder.weight': torch.zeros(2)}, strict=False)


def test_a_checkpoint_of_another_act_num_is_refused_by_name():
    with pytest.raises(ValueError, match='checkpoint has 9x9 activation kernels.*set act_num=4'):
        VanillaNet(TINY, act_num=3).load_state_dict(VanillaNet(TINY, act_num=4).state_dict())


def test_a_checkpoint_of_another_arch_is_refused_by_name():
    with pytest.raises(ValueError, match=r"checkpoint is a VanillaNet with stem 512 and 3 blocks.*set arch='5'"):
        VanillaNet('6', deploy=True).load_state_dict(VanillaNet('5', deploy=True).state_dict())


@pytest.mark.parametrize('compiled', [False, pytest.param(True, marks=pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (2, 4),
    reason='torch.compile of with_cp needs torch >= 2.4 (torch 2.1: an in-place error in backward)'))])
def test_with_cp_gives_the_same_outputs_gradients_and_norm_statistics(compiled):
    """Activation checkpointing recomputes each block in backward; nothing it computes or updates may differ, also
    under torch.compile."""
    arch = dict(stem_channels=8, widths=[16, 16, 32], strides=[2, 1, 2])
    torch.manual_seed(0)
    plain = VanillaNet(arch, act_num=1, out_indices=(0, 1, 2), act_lambda=0.3).train()
    checkpointed = VanillaNet(arch, act_num=1, out_indices=(0, 1, 2), act_lambda=0.3, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    results = []
    for net in (plain, checkpointed):
        outs = (torch.compile(net, backend='aot_eager') if compiled and net is checkpointed else net)(x)
        loss = sum(out.square().mean() for out in outs)
        loss.backward()
        results.append((outs, [p.grad for p in net.parameters()], list(net.buffers())))
    (outs_a, grads_a, bufs_a), (outs_b, grads_b, bufs_b) = results
    for a, b in zip(outs_a + tuple(grads_a) + tuple(bufs_a), outs_b + tuple(grads_b) + tuple(bufs_b)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(isinstance(m, torch.nn.BatchNorm2d) and m.num_batches_tracked.item() == 1
               for m in checkpointed.modules()), 'statistics updated once, not twice'
    torch._dynamo.reset()


def test_with_cp_does_nothing_in_eval_or_without_gradients():
    net = VanillaNet(dict(stem_channels=8, widths=[16], strides=[2]), act_num=1, out_indices=(0, 1), with_cp=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        net.train()(x)
    net.eval()
    torch.testing.assert_close(net(x)[0], VanillaNet.forward(net, x)[0])


@pytest.mark.slow
@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'channels_last'])
def test_the_pooling_kernel_trains_the_same_and_keeps_less_for_backward(monkeypatch, layout):
    """The Triton max-pool (forced here; on a CPU through Triton's interpreter) against nn.MaxPool2d."""
    from mmvanilla import ops
    from mmvanilla.benchmark import kept_for_backward_mb
    if not ops.triton_available():
        pytest.skip('needs Triton')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    net = VanillaNet(dict(stem_channels=8, widths=[16, 16, 32], strides=[2, 1, 3]), act_num=1,
                     out_indices=(0, 1, 2), act_lambda=0.3).to(device, memory_format=layout).train()
    x = torch.randn(2, 3, 52, 52, device=device).contiguous(memory_format=layout)

    def step():
        net.zero_grad()
        outs = net(x)
        sum(out.square().mean() for out in outs).backward()
        return outs, [p.grad.clone() for p in net.parameters()]
    monkeypatch.setattr('mmvanilla.models.vanillanet.fast_max_pool_applies', lambda x, window: False)
    plain_kept = kept_for_backward_mb(lambda: net(x), net.parameters())
    outs_plain, grads_plain = step()
    monkeypatch.setattr('mmvanilla.models.vanillanet.fast_max_pool_applies', lambda x, window: x.requires_grad)
    kept = kept_for_backward_mb(lambda: net(x), net.parameters())
    outs, grads = step()
    for a, b in zip(outs + tuple(grads), outs_plain + tuple(grads_plain)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # exact on a CPU; a GPU's convolutions may vary
        assert a.stride() == b.stride(), 'the layout is kept'
    # per image, two pools no longer keep their fp32 inputs (16 x 13 x 13 and 32 x 6 x 6 values), and int8 window
    # positions replace int64 indices (16 x 6 x 6 and 32 x 2 x 2 outputs)
    saved_bytes = 2 * (16 * 13 * 13 * 4 + 16 * 6 * 6 * 7 + 32 * 6 * 6 * 4 + 32 * 2 * 2 * 7)
    assert (plain_kept - kept) * 2**20 == pytest.approx(saved_bytes)
    for module in net.modules():
        if hasattr(module, 'fast_dwconv'):
            module.fast_dwconv = False
    monkeypatch.setattr('mmvanilla.models.vanillanet.max_pool2d', None)  # would raise if it were called
    torch.testing.assert_close(net(x), outs_plain, rtol=1e-4, atol=1e-5)



@pytest.mark.slow
def test_a_compiled_backbone_trains_with_the_kernels_and_the_same_results(monkeypatch):
    """torch.compile keeps both kernels (forced here; on a CPU through Triton's interpreter), as operators."""
    from mmvanilla import ops
    if not ops.triton_available():
        pytest.skip('needs Triton')
    from torch._dynamo.testing import AotEagerAndRecordGraphs

    from ..ops.test_depthwise import mmvanilla_ops
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    monkeypatch.setattr('mmvanilla.models.layers.fast_dwconv_applies', lambda x, k: True)
    monkeypatch.setattr('mmvanilla.models.vanillanet.fast_max_pool_applies', lambda x, window: x.requires_grad)
    torch.manual_seed(0)
    net = VanillaNet(dict(stem_channels=8, widths=[16, 32], strides=[2, 2]), act_num=1, out_indices=(0, 1, 2),
                     act_lambda=0.3).to(device).train()
    x = torch.randn(2, 3, 36, 36, device=device)

    def step(forward):
        net.zero_grad()
        outs = forward(x)
        sum(out.square().mean() for out in outs).backward()
        return [out.detach() for out in outs] + [p.grad.clone() for p in net.parameters()]
    eager = step(net)
    graphs = AotEagerAndRecordGraphs()
    compiled = step(torch.compile(net, backend=graphs, fullgraph=True))
    torch._dynamo.reset()
    assert mmvanilla_ops(graphs.fw_graphs[0]) == {'depthwise_conv2d', 'max_pool2d_with_positions'}
    assert mmvanilla_ops(graphs.bw_graphs[0]) == {'depthwise_conv2d_input_grad', 'depthwise_conv2d_weight_grad',
                                                  'max_pool2d_backward'}
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

def test_with_cp_can_checkpoint_some_stages_only():
    arch = dict(stem_channels=8, widths=[16, 16, 32], strides=[2, 1, 2])
    torch.manual_seed(0)
    plain = VanillaNet(arch, act_num=1, out_indices=(0, 1, 2), act_lambda=0.3).train()
    partly = VanillaNet(arch, act_num=1, out_indices=(0, 1, 2), act_lambda=0.3, with_cp=[0, -1]).train()
    partly.load_state_dict(plain.state_dict())
    assert partly.with_cp == (0, 2)
    assert [partly._checkpoints(i) for i in (-1, 0, 1, 2)] == [True, False, False, True], 'stem, s8, s8, s16'
    x = torch.randn(2, 3, 32, 32)
    for net in (plain, partly):
        sum(out.square().mean() for out in net(x)).backward()
    for a, b in zip(plain.parameters(), partly.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('with_cp', [[3], [0, 'x'], 2, None])
def test_with_cp_names_the_valid_stages(with_cp):
    with pytest.raises(ValueError, match=r'give True, False or a list of stage indices 0\.\.2 \(this arch has 3'):
        VanillaNet(dict(stem_channels=8, widths=[16, 16, 32], strides=[2, 1, 2]), act_num=1, out_indices=(0,),
                   with_cp=with_cp)
