"""Building and loading models (mmvanilla/apis.py): init_model, load_model, check_checkpoint_fits."""
import re

import pytest
import torch
from mmengine.config import Config

from mmvanilla.apis import build_model, check_checkpoint_fits, init_model, load_model
from mmvanilla.deploy import switch_to_deploy
from mmvanilla.models.utils import set_act_lambda

from .conftest import RETINANET, ROOT

CLASSIFIER = ROOT / 'configs/vanillanet_tiny_synthetic_cls.py'


# Does a checkpoint fit the model a config builds? Checked on the meta device, before any work.

@pytest.fixture(scope='module')
def model_checkpoints(tmp_path_factory):
    """The tiny RetinaNet's, Mask R-CNN's and classifier's weights, saved as mmengine's runner saves them."""
    root = tmp_path_factory.mktemp('fit')
    for name in ('retinanet', 'mask_rcnn'):
        model = build_model(Config.fromfile(ROOT / f'configs/{name}_vanillanet_tiny_synthetic.py'))
        torch.save(dict(state_dict=model.state_dict(), meta=dict(experiment_name=f'{name}_tiny_20261123_021800')),
                   root / f'{name}.pth')
    return root


def test_a_checkpoint_of_the_config_fits(model_checkpoints):
    assert check_checkpoint_fits(Config.fromfile(RETINANET), str(model_checkpoints / 'retinanet.pth')).fits


def test_another_models_checkpoint_is_refused_naming_what_it_is(model_checkpoints):
    with pytest.raises(ValueError) as error:
        check_checkpoint_fits(Config.fromfile(RETINANET), str(model_checkpoints / 'mask_rcnn.pth'))
    message = str(error.value)
    assert "mask_rcnn.pth does not fit the config's RetinaNet: it holds a two-stage detector with a mask head" \
        in message
    assert 'trained as mask_rcnn_tiny;' in message
    assert re.search(r'model weights missing from it \(e.g. [^)]*bbox_head\.', message)
    assert 'weights the model has no place for (e.g. ' in message
    assert 'To evaluate, use the checkpoint trained' in message


def test_load_from_needs_every_model_weight_but_tolerates_a_head_of_another_size(model_checkpoints):
    cfg = Config.fromfile(RETINANET)
    with pytest.raises(ValueError, match=r'For load_from, give load_from a checkpoint of this whole model'):
        check_checkpoint_fits(cfg, str(model_checkpoints / 'mask_rcnn.pth'), 'load_from')
    cfg.model.bbox_head.num_classes = 7  # fine-tuning on another data set
    fit = check_checkpoint_fits(cfg, str(model_checkpoints / 'retinanet.pth'), 'load_from')
    assert not fit.fits and fit['mismatched'] and not fit['missing']
    assert all(key.startswith('bbox_head.retina_cls.') for key in fit['mismatched'])
    with pytest.raises(ValueError, match=r'2 weights of another shape \(e.g. bbox_head.retina_cls.weight: '):
        check_checkpoint_fits(cfg, str(model_checkpoints / 'retinanet.pth'), 'resume')


# init_model: a config (and a checkpoint) in, a model in eval mode out, in the form asked for.

@pytest.fixture(scope='module')
def classifier_checkpoints(tmp_path_factory):
    """The tiny classifier saved at lambda = 1 in training form (as a runner saves it) and in deploy form."""
    root = tmp_path_factory.mktemp('init')
    model = build_model(Config.fromfile(CLASSIFIER))
    set_act_lambda(model, 1.0)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=3)), root / 'training.pth')
    switch_to_deploy(model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(deploy=True)), root / 'deploy.pth')
    return root


def _forms(model):
    return {getattr(m, 'deployed') for m in model.modules() if hasattr(m, 'deployed')}


def test_init_model_without_a_checkpoint_builds_the_form_asked_for_in_eval_mode():
    model = init_model(CLASSIFIER)
    assert not model.training and _forms(model) == {False} and model.cfg.model.type == 'ImageClassifier'
    assert _forms(init_model(Config.fromfile(CLASSIFIER), deploy=True)) == {True}


def test_init_model_loads_a_checkpoint_in_its_own_form(classifier_checkpoints):
    for form, deployed in (('training', False), ('deploy', True)):
        path = classifier_checkpoints / f'{form}.pth'
        model = init_model(CLASSIFIER, path)
        assert _forms(model) == {deployed} and not model.training
        weights = torch.load(path, weights_only=True)['state_dict']
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
        assert load_model(Config.fromfile(CLASSIFIER), path).deploy is deployed


def test_init_model_refuses_a_checkpoint_in_the_other_form_naming_the_fix(classifier_checkpoints):
    with pytest.raises(ValueError, match=r'training.pth is in training form, not in the deploy form asked for: '
                                         r'convert it with tools/reparameterize.py'):
        init_model(CLASSIFIER, classifier_checkpoints / 'training.pth', deploy=True)
    with pytest.raises(ValueError, match=r'deploy.pth is in deploy form, not in the training form'):
        init_model(CLASSIFIER, classifier_checkpoints / 'deploy.pth', deploy=False)


def test_init_model_applies_cfg_options_and_leaves_the_config_unchanged():
    cfg = Config.fromfile(CLASSIFIER)
    model = init_model(cfg, cfg_options={'model.network.num_classes': 3})
    assert model.network.head.fc.conv2.conv.out_channels == 3 and cfg.model.network.num_classes != 3


def test_init_model_names_a_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match='checkpoint nowhere.pth not found'):
        init_model(CLASSIFIER, 'nowhere.pth')
