"""The paper's published checkpoints load into our models and give the paper's outputs.

No published file is available here: the tests write checkpoints in the paper's key layout with random weights and
compare our models with an independent functional re-implementation of the paper's forward pass.
"""
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint

import mmvanilla  # noqa: F401  (registers the models)
from mmvanilla.apis import build_model
from mmvanilla.models import VanillaNet, VanillaNetClassifier, convert_official_checkpoint, map_official_keys
from mmvanilla.checkpoint import compare_keys
from mmvanilla.models.official import official_form
from mmvanilla.models.vanillanet import resolve_arch

ROOT = Path(__file__).resolve().parents[2]
# A stride-1 block after the stem (stage 0 ends at a block) and a stride-1 block at the end, as in VanillaNet-13.
TINY = dict(stem_channels=8, widths=[8, 16, 24, 32, 32], strides=[1, 2, 2, 2, 1])
# The ada_pool variant's shape in small: stride-3 padded stem, adaptive max-pools instead of strided ones.
TINY_ADA = dict(stem_channels=8, widths=[16, 24, 32], strides=[1, 1, 1], stem_stride=3, stem_padding=1,
                pool_sizes=[8, 4, 2])
NUM_CLASSES = 10


# ---------------------------------------------------------------------------------------------------------------
# The paper's model, written from its description: weights in its key layout, forward pass with torch.nn.functional.
# ---------------------------------------------------------------------------------------------------------------

def official_state_dict(arch, act_num=3, form='training', num_classes=NUM_CLASSES, seed=0, device=None):
    """Random weights under the paper's keys; BatchNorms with random statistics. ``num_classes=0``: no cls*."""
    arch = resolve_arch(arch)
    gen = torch.Generator().manual_seed(seed)
    sd = {}

    def rand(*shape, scale=1.0, shift=0.0):
        if device == 'meta':
            return torch.empty(shape, device='meta')
        return torch.randn(*shape, generator=gen) * scale + shift

    def conv(name, cout, cin, k):
        sd[name + '.weight'] = rand(cout, cin, k, k, scale=(cin * k * k) ** -0.5)
        sd[name + '.bias'] = rand(cout, scale=0.1)

    def bn(name, c):
        sd[name + '.weight'] = rand(c, scale=0.1, shift=1.0)
        sd[name + '.bias'] = rand(c, scale=0.1)
        sd[name + '.running_mean'] = rand(c, scale=0.1)
        sd[name + '.running_var'] = rand(c, scale=0.1, shift=1.0).abs()
        sd[name + '.num_batches_tracked'] = torch.tensor(100)

    def act_kernel(name, c):
        k = 2 * act_num + 1
        sd[name + '.weight'] = rand(c, 1, k, k, scale=1.0 / k)

    dims = [arch['stem_channels'], *arch['widths']]
    if form == 'training':
        conv('stem1.0', dims[0], 3, 4)
        bn('stem1.1', dims[0])
        conv('stem2.0', dims[0], dims[0], 1)
        bn('stem2.1', dims[0])
        act_kernel('stem2.2', dims[0])
        bn('stem2.2.bn', dims[0])
        for i, (cin, cout) in enumerate(zip(dims, dims[1:])):
            conv(f'stages.{i}.conv1.0', cin, cin, 1)
            bn(f'stages.{i}.conv1.1', cin)
            conv(f'stages.{i}.conv2.0', cout, cin, 1)
            bn(f'stages.{i}.conv2.1', cout)
            act_kernel(f'stages.{i}.act', cout)
            bn(f'stages.{i}.act.bn', cout)
        if num_classes:
            conv('cls1.2', num_classes, dims[-1], 1)
            bn('cls1.3', num_classes)
            conv('cls2.0', num_classes, num_classes, 1)
    else:
        conv('stem.0', dims[0], 3, 4)
        act_kernel('stem.1', dims[0])
        sd['stem.1.bias'] = rand(dims[0], scale=0.1)
        for i, (cin, cout) in enumerate(zip(dims, dims[1:])):
            conv(f'stages.{i}.conv', cout, cin, 1)
            act_kernel(f'stages.{i}.act', cout)
            sd[f'stages.{i}.act.bias'] = rand(cout, scale=0.1)
        if num_classes:
            conv('cls.2', num_classes, dims[-1], 1)
    return sd


def paper_forward(sd, arch, act_num, x, act_learn=1.0):
    """The paper's VanillaNet on ``x``: (the output of each stage, the logits or None without cls*)."""
    arch = resolve_arch(arch)
    training = 'stem1.0.weight' in sd

    def conv(x, name, stride=1, padding=0, groups=1):
        return F.conv2d(x, sd[name + '.weight'], sd.get(name + '.bias'), stride, padding, 1, groups)

    def bn(x, name):
        return F.batch_norm(x, sd[name + '.running_mean'], sd[name + '.running_var'], sd[name + '.weight'],
                            sd[name + '.bias'], False, 0.0, 1e-6)

    def activation(x, name):
        x = conv(F.relu(x), name, padding=act_num, groups=x.shape[1])
        return bn(x, name + '.bn') if training else x

    stem = dict(stride=arch['stem_stride'], padding=arch['stem_padding'])
    if training:
        x = F.leaky_relu(bn(conv(x, 'stem1.0', **stem), 'stem1.1'), act_learn)
        x = activation(bn(conv(x, 'stem2.0'), 'stem2.1'), 'stem2.2')
    else:
        x = activation(conv(x, 'stem.0', **stem), 'stem.1')
    inputs = []  # inputs[i]: the input of block i
    for i, (stride, pool) in enumerate(zip(arch['strides'], arch['pool_sizes'])):
        inputs.append(x)
        if training:
            x = F.leaky_relu(bn(conv(x, f'stages.{i}.conv1.0'), f'stages.{i}.conv1.1'), act_learn)
            x = bn(conv(x, f'stages.{i}.conv2.0'), f'stages.{i}.conv2.1')
        else:
            x = conv(x, f'stages.{i}.conv')
        if pool is not None:
            x = F.adaptive_max_pool2d(x, pool)
        elif stride > 1:
            x = F.max_pool2d(x, stride)
        x = activation(x, f'stages.{i}.act')
    # A stage ends where the next block downsamples, and at the end.
    stages = [inputs[i] for i, (s, p) in enumerate(zip(arch['strides'], arch['pool_sizes']))
              if s > 1 or p is not None] + [x]
    logits = None
    if 'cls1.2.weight' in sd or 'cls.2.weight' in sd:
        y = x.mean((2, 3), keepdim=True)
        if training:
            y = conv(F.leaky_relu(bn(conv(y, 'cls1.2'), 'cls1.3'), act_learn), 'cls2.0')
        else:
            y = conv(y, 'cls.2')
        logits = y.flatten(1)
    return stages, logits


def assert_same(ours, ref):
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def images(size=64, seed=1):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def save(obj, path):
    torch.save(obj, path)
    return str(path)


@pytest.fixture
def log_lines():
    """Messages logged through MMLogger while the test runs."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


# ---------------------------------------------------------------------------------------------------------------
# The key table
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('form', ['training', 'deploy'])
def test_every_official_key_maps_onto_exactly_our_classifier_keys(form):
    official = official_state_dict(TINY, act_num=2, form=form)
    weights = map_official_keys(official)
    model = VanillaNetClassifier(TINY, NUM_CLASSES, act_num=2, deploy=form == 'deploy')
    assert weights.form == form and weights.unmapped == []
    own = model.state_dict()
    assert set(weights.state_dict) == set(own)
    assert all(weights.state_dict[k].shape == own[k].shape for k in own)


def test_training_form_gets_lambda_one_per_layer_since_the_paper_saves_none():
    weights = map_official_keys(official_state_dict(TINY, form='training'))
    lambdas = {k: v for k, v in weights.state_dict.items() if k.endswith('act_lambda')}
    assert len(lambdas) == 1 + len(TINY['widths']) + 1  # stem, blocks, head
    assert all(v.tolist() == [1.0] for v in lambdas.values())


def test_mapping_is_pure_and_reports_unmapped_keys():
    official = official_state_dict(TINY, num_classes=0)
    official['stages.0.conv1.0.extra'] = torch.zeros(1)
    before = dict(official)
    weights = map_official_keys(official)
    assert weights.unmapped == ['stages.0.conv1.0.extra']
    assert official.keys() == before.keys() and all(official[k] is before[k] for k in before)


def test_form_detection_and_mixed_forms_are_refused():
    assert official_form(official_state_dict(TINY, form='training')) == 'training'
    assert official_form(official_state_dict(TINY, form='deploy')) == 'deploy'
    assert official_form(VanillaNet(TINY).state_dict()) is None
    mixed = {**official_state_dict(TINY, form='training'), **official_state_dict(TINY, form='deploy')}
    with pytest.raises(ValueError, match='mixes keys of the training form'):
        map_official_keys(mixed)


# ---------------------------------------------------------------------------------------------------------------
# Outputs equal the paper's
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch, act_num, form', [(TINY, 2, 'training'), (TINY, 1, 'deploy'),
                                                 (TINY_ADA, 3, 'training'), (TINY_ADA, 2, 'deploy')])
def test_classifier_loading_a_paper_checkpoint_gives_the_papers_logits(tmp_path, arch, act_num, form):
    ema = official_state_dict(arch, act_num, form, seed=0)
    path = save(dict(model=official_state_dict(arch, act_num, form, seed=1), model_ema=ema, epoch=299), tmp_path / 'c.pth')
    x = images(48)
    _, expected = paper_forward(ema, arch, act_num, x)
    for load in ('torch', 'mmengine', 'init_cfg'):
        model = VanillaNetClassifier(arch, NUM_CLASSES, act_num=act_num, deploy=form == 'deploy',
                                     init_cfg=dict(type='Pretrained', checkpoint=path))
        if load == 'torch':
            model.load_state_dict(torch.load(path))  # strict
        elif load == 'mmengine':
            load_checkpoint(model, path, strict=True)
        else:
            model.init_weights()
        model.eval()
        with torch.no_grad():
            assert_same(model(x), expected)
        assert model.get_act_lambda() == 1.0


def test_loaded_training_form_reparameterizes_to_the_papers_deploy_outputs(tmp_path):
    official = official_state_dict(TINY, act_num=2)
    model = VanillaNetClassifier(TINY, NUM_CLASSES, act_num=2).eval()
    model.load_state_dict(official)
    model.switch_to_deploy()
    x = images()
    with torch.no_grad():
        assert_same(model(x), paper_forward(official, TINY, 2, x)[1])


def test_backbone_pretrained_init_takes_the_ema_weights_and_ignores_the_classifier(tmp_path, log_lines):
    ema = official_state_dict(TINY, act_num=2, seed=0)
    path = save(dict(model=official_state_dict(TINY, act_num=2, seed=1), model_ema=ema), tmp_path / 'c.pth')
    net = VanillaNet(TINY, act_num=2, out_indices=(0, 1, 2, 3), init_cfg=dict(type='Pretrained', checkpoint=path))
    net.init_weights()
    net.eval()
    x = images()
    with torch.no_grad():
        feats = net(x)
    expected, _ = paper_forward(ema, TINY, 2, x)
    assert len(feats) == len(expected) == 4
    for ours, ref in zip(feats, expected):
        assert_same(ours, ref)
    assert net.get_act_lambda() == 1.0
    log = '\n'.join(log_lines)
    assert "loading the EMA weights ('model_ema')" in log
    assert 'training-form layout' in log and 'ignored its 9 classifier tensors (cls*)' in log
    assert 'missing keys' not in log and 'unexpected key' not in log


def test_backbone_takes_the_model_weights_when_there_is_no_ema(tmp_path, log_lines):
    official = official_state_dict(TINY, act_num=2, form='deploy')
    path = save(dict(model=official), tmp_path / 'c.pth')
    net = VanillaNet(TINY, act_num=2, out_indices=(3,), deploy=True,
                     init_cfg=dict(type='Pretrained', checkpoint=path))
    net.init_weights()
    x = images()
    with torch.no_grad():
        assert_same(net.eval()(x)[0], paper_forward(official, TINY, 2, x)[0][3])
    assert "the 'model' weights (there are no EMA ones)" in '\n'.join(log_lines)


# ---------------------------------------------------------------------------------------------------------------
# Mismatches are refused with the fix
# ---------------------------------------------------------------------------------------------------------------

def test_checkpoint_of_another_act_num_names_the_fix():
    official = official_state_dict(TINY, act_num=4)
    with pytest.raises(ValueError, match='9x9 activation kernels.*set act_num=4'):
        VanillaNet(TINY, act_num=3).load_state_dict(official, strict=False)


def test_checkpoint_of_another_arch_names_the_fix():
    official = official_state_dict('5', num_classes=0, device='meta')
    with pytest.raises(ValueError, match="set arch='5'"):
        VanillaNet(TINY).load_state_dict(official, strict=False)


def test_deploy_form_checkpoint_into_a_training_form_model_suggests_deploy_true(tmp_path):
    path = save(dict(model=official_state_dict(TINY, form='deploy')), tmp_path / 'c.pth')
    net = VanillaNet(TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match='checkpoint is in deploy form.*build it with deploy=True'):
        net.init_weights()


def test_training_form_checkpoint_into_a_deploy_form_model_suggests_deploy_false():
    with pytest.raises(RuntimeError, match=r'training form \(lambda=1\).*load it with deploy=False'):
        VanillaNetClassifier(TINY, NUM_CLASSES, deploy=True).load_state_dict(official_state_dict(TINY))


# ---------------------------------------------------------------------------------------------------------------
# mmdet 2.x detection checkpoints
# ---------------------------------------------------------------------------------------------------------------

# Neck and head keys of the paper's mmdet 2.x detectors: mmdet 3.x kept these module names.
MMDET2_KEYS = {
    'retinanet': ['neck.lateral_convs.0.conv.weight', 'neck.fpn_convs.4.conv.weight',
                  'bbox_head.cls_convs.0.conv.weight', 'bbox_head.reg_convs.3.conv.bias',
                  'bbox_head.retina_cls.weight', 'bbox_head.retina_reg.bias'],
    'mask_rcnn': ['neck.lateral_convs.3.conv.weight', 'neck.fpn_convs.3.conv.bias', 'rpn_head.rpn_conv.weight',
                  'rpn_head.rpn_cls.weight', 'rpn_head.rpn_reg.bias', 'roi_head.bbox_head.shared_fcs.0.weight',
                  'roi_head.bbox_head.shared_fcs.1.bias', 'roi_head.bbox_head.fc_cls.weight',
                  'roi_head.bbox_head.fc_reg.bias', 'roi_head.mask_head.convs.0.conv.weight',
                  'roi_head.mask_head.convs.3.conv.bias', 'roi_head.mask_head.upsample.weight',
                  'roi_head.mask_head.conv_logits.weight'],
}


def mmdet2_checkpoint(model, arch, act_num, device=None):
    """An mmdet 2.x detector checkpoint of the paper: its backbone names, our detector's neck and heads."""
    backbone = official_state_dict(arch, act_num, num_classes=0, device=device)
    others = {k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    return dict(meta=dict(CLASSES=('a', 'b'), mmdet_version='2.28.2'),
                state_dict={**{'backbone.' + k: v for k, v in backbone.items()}, **others})


@pytest.mark.parametrize('name', ['retinanet', 'mask_rcnn'])
def test_papers_coco_configs_take_a_converted_mmdet2_checkpoint_strictly(name):
    cfg = Config.fromfile(str(ROOT / f'configs/{name}_vanillanet13_coco.py'))
    with torch.device('meta'):  # full size, but no memory and no weights
        model = build_model(cfg)
    own = model.state_dict()
    assert set(MMDET2_KEYS[name]) <= set(own)
    converted, report = convert_official_checkpoint(mmdet2_checkpoint(model, '13', act_num=4, device='meta'))
    assert report['kind'] == 'detector' and report['unmapped'] == [] and report['dropped'] == []
    assert compare_keys(converted['state_dict'], model) == dict(missing=[], unexpected=[], mismatched=[])
    assert converted['meta']['dataset_meta'] == dict(classes=('a', 'b'))


@pytest.mark.parametrize('config', ['retinanet_vanillanet_tiny_synthetic.py', 'mask_rcnn_vanillanet_tiny_synthetic.py'])
def test_converted_mmdet2_checkpoint_gives_the_papers_backbone_features(config):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    model = build_model(cfg).eval()
    arch, act_num = cfg.model.backbone.arch, cfg.model.backbone.act_num
    checkpoint = mmdet2_checkpoint(model, arch, act_num)
    converted, report = convert_official_checkpoint(checkpoint)
    model.load_state_dict(converted['state_dict'], strict=True)
    x = images(64)
    expected, _ = paper_forward(official_state_dict(arch, act_num, num_classes=0), arch, act_num, x)
    with torch.no_grad():
        feats = model.backbone(x)
    for ours, k in zip(feats, model.backbone.out_indices):
        assert_same(ours, expected[k])
    assert model.backbone.get_act_lambda() == 1.0


def test_mmdet2_checkpoint_also_loads_unconverted_through_load_from(tmp_path):
    cfg = Config.fromfile(str(ROOT / 'configs/retinanet_vanillanet_tiny_synthetic.py'))
    model = build_model(cfg).eval()
    arch, act_num = cfg.model.backbone.arch, cfg.model.backbone.act_num
    path = save(mmdet2_checkpoint(model, arch, act_num), tmp_path / 'mmdet2.pth')
    load_checkpoint(model, path, strict=True)  # what the runner's load_from does
    x = images(64)
    expected, _ = paper_forward(official_state_dict(arch, act_num, num_classes=0), arch, act_num, x)
    with torch.no_grad():
        assert_same(model.backbone(x)[-1], expected[-1])


@pytest.mark.slow
def test_convert_tool_writes_a_strictly_loading_file_and_lists_unmapped_keys(tmp_path):
    config = str(ROOT / 'configs/retinanet_vanillanet_tiny_synthetic.py')
    cfg = Config.fromfile(config)
    model = build_model(cfg)
    checkpoint = mmdet2_checkpoint(model, cfg.model.backbone.arch, cfg.model.backbone.act_num)
    checkpoint['state_dict']['backbone.stages.9.conv1.0.extra'] = torch.zeros(1)
    src, dst = save(checkpoint, tmp_path / 'mmdet2.pth'), str(tmp_path / 'mmdet3.pth')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/convert_checkpoint.py'), src, dst, '--config', config],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the stray key does not fit
    assert 'unmapped: backbone.stages.9.conv1.0.extra' in proc.stdout
    assert 'unexpected' not in proc.stdout and 'missing' not in proc.stdout
    converted = torch.load(dst)
    model.load_state_dict(converted['state_dict'], strict=True)
    assert converted['meta']['form'] == 'training' and converted['meta']['converted_from'] == src


def test_converting_a_converted_checkpoint_says_so():
    with pytest.raises(ValueError, match='already converted'):
        convert_official_checkpoint(dict(state_dict=VanillaNetClassifier(TINY, NUM_CLASSES).state_dict()))
