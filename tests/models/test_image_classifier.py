"""ImageClassifier: the paper's ImageNet training (timm's mixup/cutmix, smoothing and BCE) in mmengine's model API."""
import pytest
import timm.loss
import timm.optim
import torch
from mmdet.registry import MODELS, OPTIMIZERS

import mmvanilla  # noqa: F401  (registers the models, LAMB and timm's losses)
from mmvanilla.deploy import switch_to_deploy
from mmvanilla.models import ImageClassifier, VanillaNetClassifier
from mmvanilla.models.utils import get_act_lambda, set_act_lambda

from .test_layers import randomize_bns

NETWORK = dict(type='VanillaNetClassifier', arch=dict(stem_channels=8, widths=[16, 32], strides=[2, 2]),
               num_classes=5, act_num=1)


def test_the_three_modes_give_a_loss_predictions_and_logits():
    model = ImageClassifier(NETWORK)
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    loss = model(images, labels, mode='loss')['loss']
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.network.parameters() if p.requires_grad)
    model.eval()
    predictions = model(images, labels, mode='predict')
    assert [int(p['gt_label']) for p in predictions] == [0, 1, 2, 4]
    scores = torch.stack([p['pred_score'] for p in predictions])
    torch.testing.assert_close(scores.sum(1), torch.ones(4))
    torch.testing.assert_close(scores, model(images, mode='tensor').softmax(1))
    with pytest.raises(ValueError, match='mode'):
        model(images, mode='train')


def test_without_mixup_the_targets_are_smoothed_one_hot():
    model = ImageClassifier(NETWORK, label_smoothing=0.1)
    images = torch.rand(2, 3, 32, 32)
    same, targets = model.soft_targets(images, torch.tensor([3, 0]))
    assert same is images
    torch.testing.assert_close(targets[0], torch.tensor([0.02, 0.02, 0.02, 0.92, 0.02]))
    torch.testing.assert_close(targets.sum(1), torch.ones(2))


def test_mixup_and_cutmix_mix_images_and_targets_of_pairs():
    model = ImageClassifier(NETWORK, mixup=dict(mixup_alpha=0.1, cutmix_alpha=1.0), label_smoothing=0.1)
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    mixed, targets = model.soft_targets(images.clone(), torch.tensor([0, 1, 2, 3]))
    assert mixed.shape == images.shape and not torch.equal(mixed, images)
    assert targets.shape == (4, 5)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert (targets[:, 4] < 0.05).all()  # class 4 is in no image: only its smoothing share
    with pytest.raises(ValueError, match='even.*drop_last=True'):
        model.soft_targets(torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2]))


def test_the_paper_recipe_parts_are_timms_and_registered():
    assert OPTIMIZERS.get('Lamb') is timm.optim.Lamb
    assert isinstance(MODELS.build(dict(type='BinaryCrossEntropy')), timm.loss.BinaryCrossEntropy)
    assert isinstance(ImageClassifier(NETWORK).loss_module, timm.loss.BinaryCrossEntropy)


def test_a_network_that_does_not_classify_is_refused():
    with pytest.raises(ValueError, match='num_classes'):
        ImageClassifier(dict(NETWORK, num_classes=0))


def test_lambda_and_re_parameterization_reach_the_network():
    model = ImageClassifier(NETWORK)
    assert set_act_lambda(model, 0.5) == 1 and get_act_lambda(model) == 0.5
    with pytest.raises(RuntimeError, match='lambda=0.5'):
        switch_to_deploy(model)
    set_act_lambda(model, 1.0)
    randomize_bns(model)
    model.eval()
    images = torch.rand(2, 3, 32, 32)
    before = model(images)
    switch_to_deploy(model)
    assert isinstance(model.network, VanillaNetClassifier) and model.network.backbone.deploy
    torch.testing.assert_close(model(images), before, rtol=1e-4, atol=1e-5)


def test_a_wider_head_than_the_papers_still_merges_into_one_conv():
    network = VanillaNetClassifier(NETWORK['arch'], num_classes=3, head_hidden_channels=64, act_lambda=1.0)
    assert network.head.fc.conv1.conv.out_channels == 64
    randomize_bns(network)
    network.eval()
    images = torch.rand(2, 3, 32, 32)
    before = network(images)
    network.switch_to_deploy()
    assert network.head.fc.conv.weight.shape == (3, 32, 1, 1)
    torch.testing.assert_close(network(images), before, rtol=1e-4, atol=1e-5)


def test_channels_last_runs_the_network_in_that_layout_with_the_same_results():
    torch.manual_seed(0)
    nchw = ImageClassifier(NETWORK).eval()
    model = ImageClassifier(NETWORK, channels_last=True).eval()
    model.load_state_dict(nchw.state_dict())
    assert model.network.backbone.stem.layer.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model.network.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(images, mode='tensor'), nchw(images, mode='tensor'), rtol=1e-4, atol=1e-5)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
