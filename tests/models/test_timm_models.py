import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config
from timm.utils import reparameterize_model

import mmvanilla  # noqa: F401  (registers the timm models)
from mmvanilla.models import ARCH_SETTINGS
from mmvanilla.models.timm_models import TimmVanillaNet, register_vanillanet

from .test_layers import randomize_bns
from .test_official import assert_same, official_state_dict, paper_forward

TINY = dict(stem_channels=8, widths=[16, 24, 32], strides=[2, 2, 2])
NAME = 'vanillanet_test_tiny'
NAMES = ['vanillanet_5', 'vanillanet_6', 'vanillanet_7', 'vanillanet_8', 'vanillanet_9', 'vanillanet_10',
         'vanillanet_11', 'vanillanet_12', 'vanillanet_13', 'vanillanet_13_x1_5', 'vanillanet_13_x1_5_ada_pool']


@pytest.fixture(scope='module', autouse=True)
def tiny_variant():
    register_vanillanet(NAME, TINY)


def images(size=64):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def checkpoint_file(tmp_path, act_num=2, form='training'):
    """The paper's ImageNet checkpoint layout: the model and its EMA (which timm and we load)."""
    ema = official_state_dict(TINY, act_num, form, num_classes=1000, seed=0)
    path = tmp_path / 'vanillanet_test_tiny.pth'
    torch.save(dict(model=official_state_dict(TINY, act_num, form, num_classes=1000, seed=1), model_ema=ema), path)
    return str(path), ema


def test_every_paper_variant_is_registered_with_its_evaluation_settings():
    assert set(NAMES) <= set(timm.list_models('vanillanet_*'))
    assert len(NAMES) == len(ARCH_SETTINGS)
    for name in NAMES:
        cfg = timm.models.get_pretrained_cfg(name)
        big = name in ('vanillanet_12', 'vanillanet_13') or 'x1_5' in name
        assert cfg.crop_pct == (0.95 if big else 0.875), name
        assert (cfg.input_size, cfg.num_classes, cfg.mean, cfg.std) == (
            (3, 224, 224), 1000, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
        assert cfg.file == f'{name}.pth' and not cfg.url and not cfg.hf_hub_id


def test_create_model_takes_num_classes_and_act_num():
    model = timm.create_model('vanillanet_9', num_classes=10, act_num=4).eval()
    assert isinstance(model, TimmVanillaNet) and model.num_classes == 10
    assert model.backbone.act_num == 4 and model.backbone.arch['widths'] == ARCH_SETTINGS['9']['widths']
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert resolve_data_config({}, model=model)['crop_pct'] == 0.875


def test_timm_model_interface():
    model = timm.create_model(NAME, num_classes=5, drop_rate=0.1).eval()
    x = images()
    features = model.forward_features(x)
    assert features.shape == (2, 32, 2, 2) and model.num_features == model.head_hidden_size == 32
    torch.testing.assert_close(model.forward_head(features), model(x))
    assert model.forward_head(features, pre_logits=True).shape == (2, 32)
    assert model.get_classifier() is model.head.fc and model.default_cfg['architecture'] == NAME
    model.reset_classifier(0)
    assert model(x).shape == (2, 32) and isinstance(model.get_classifier(), torch.nn.Identity)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(x).shape == (2, 7)
    with pytest.raises(ValueError, match='3-channel'):
        timm.create_model(NAME, in_chans=1)


def test_features_only_gives_strides_4_8_16_32():
    model = timm.create_model(NAME, features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [8, 16, 24, 32]
    assert not any(k.startswith('model.head.fc') for k in model.state_dict())  # the classifier is pruned
    feats = model(images())
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 16, 16), (16, 8, 8), (24, 4, 4), (32, 2, 2)]
    subset = timm.create_model(NAME, features_only=True, out_indices=(1, 3)).eval()
    assert [f.shape[1] for f in subset(images())] == [16, 32]


@pytest.mark.parametrize('name, reductions', [('vanillanet_5', [4, 8, 16, 32]), ('vanillanet_13', [4, 8, 16, 32]),
                                              ('vanillanet_13_x1_5_ada_pool', [3, 6, 12, 24])])
def test_feature_info_of_the_paper_variants(name, reductions):
    with torch.device('meta'):  # metadata only: no memory, no initialization cost
        model = timm.create_model(name)
    assert [info['reduction'] for info in model.feature_info] == reductions
    scale = 1.5 if 'x1_5' in name else 1
    assert [info['num_chs'] for info in model.feature_info] == [int(c * scale) for c in (512, 1024, 2048, 4096)]


def test_forward_intermediates_matches_the_backbone_and_leaves_forward_alone():
    model = timm.create_model(NAME, num_classes=3).eval()
    x = images()
    final, stages = model.forward_intermediates(x)
    backbone_stages = model.backbone.__class__(TINY, out_indices=(0, 1, 2, 3))
    backbone_stages.load_state_dict(model.backbone.state_dict())
    for ours, expected in zip(stages, backbone_stages.eval()(x)):
        torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(final, stages[-1])
    assert model.backbone.out_indices == (3,)


def test_reparameterize_model_is_exact_at_lambda_one_and_refused_below():
    torch.manual_seed(0)
    model = randomize_bns(timm.create_model(NAME, num_classes=5, act_num=2)).eval()
    with pytest.raises(RuntimeError, match='lambda=0'):
        reparameterize_model(model)
    model.set_act_lambda(1.0)
    fused = reparameterize_model(model)
    x = images()
    with torch.no_grad():
        assert_same(fused(x), model(x))
    deployed = timm.create_model(NAME, num_classes=5, act_num=2, deploy=True)
    assert fused.state_dict().keys() == deployed.state_dict().keys()


@pytest.mark.parametrize('form', ['training', 'deploy'])
def test_pretrained_file_of_the_paper_gives_the_papers_logits(tmp_path, form):
    path, ema = checkpoint_file(tmp_path, form=form)
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=path), act_num=2,
                              deploy=form == 'deploy').eval()
    x = images()
    with torch.no_grad():
        assert_same(model(x), paper_forward(ema, TINY, 2, x)[1])
    assert model.get_act_lambda() == 1.0


def test_pretrained_with_other_classes_keeps_the_backbone_and_a_fresh_head(tmp_path):
    path, ema = checkpoint_file(tmp_path)
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=path), act_num=2,
                              num_classes=3).eval()
    x = images()
    with torch.no_grad():
        assert_same(model.forward_features(x), paper_forward(ema, TINY, 2, x)[0][-1])
        assert model(x).shape == (2, 3)
    assert model.get_act_lambda() == 1.0  # the new head follows the checkpoint's lambda: it can be fused
    features = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=path), act_num=2,
                                 features_only=True).eval()
    with torch.no_grad():
        assert_same(features(x)[2], paper_forward(ema, TINY, 2, x)[0][2])


def test_pretrained_training_form_into_a_deploy_model_is_refused(tmp_path):
    path, _ = checkpoint_file(tmp_path)
    with pytest.raises(ValueError, match='training form.*deploy=False'):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=path), act_num=2, deploy=True)


def test_grad_checkpointing_and_the_kernel_switch_reach_the_backbone():
    model = timm.create_model('vanillanet_5', num_classes=3, act_num=1, fast_dwconv=False)
    assert not any(m.fast_dwconv for m in model.modules() if hasattr(m, 'fast_dwconv'))
    model.set_grad_checkpointing()
    assert model.backbone.with_cp
    model.set_grad_checkpointing(False)
    assert not model.backbone.with_cp


def test_pretrained_without_its_file_names_the_file_and_how_to_give_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r'vanillanet_5: pretrained=True loads the weights file '
                                                r'vanillanet_5.pth, which does not exist \(nothing is downloaded\)'):
        timm.create_model('vanillanet_5', pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"elsewhere/v5.pth, which does not exist.*pretrained_cfg_overlay="
                                                r"dict\(file='PATH/TO/vanillanet_5.pth'\)"):
        timm.create_model('vanillanet_5', pretrained=True, pretrained_cfg_overlay=dict(file='elsewhere/v5.pth'))
