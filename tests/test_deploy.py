"""Re-parameterization of whole models and checkpoints (mmvanilla/deploy.py)."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import EMAHook
from mmengine.model import ExponentialMovingAverage
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmvanilla.apis import build_model
from mmvanilla.deploy import reparameterize_checkpoint, switch_to_deploy
from mmvanilla.models.utils import get_act_lambda, set_act_lambda

from .conftest import RETINANET
from .models.test_layers import randomize_bns


def matched(boxes_a, scores_a, labels_a, boxes_b, scores_b, labels_b):
    """Every detection of A has one in B with the same label, score (1e-4) and box (1e-3 relative)."""
    for box, score, label in zip(boxes_a, scores_a, labels_a):
        same = (labels_b == label) & ((scores_b - score).abs() < 1e-4)
        rel = ((boxes_b - box).abs() / box.abs().clamp_min(1.0)).max(dim=1).values
        if not (same & (rel < 1e-3)).any():
            return False
    return True


@pytest.mark.slow
def test_a_trained_detector_gives_the_same_detections_in_deploy_form(tiny_detection_run):
    cfg = Config.fromfile(RETINANET)
    cfg.model.test_cfg.score_thr = 0.0
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(cfg).eval()
        model.load_state_dict(torch.load(tiny_detection_run['trained'])['state_dict'])
        cfg.test_dataloader.dataset.data_root = str(tiny_detection_run['cwd'] / 'data/synthetic_coco')
        batch = next(iter(Runner.build_dataloader(cfg.test_dataloader)))
        with torch.no_grad():
            before = model.test_step(batch)
            switch_to_deploy(model)
            after = model.test_step(batch)
    assert model.backbone.deploy and hasattr(model, 'neck') and hasattr(model, 'bbox_head')
    for a, b in zip(before, after):
        a, b = a.pred_instances, b.pred_instances
        assert len(a) == len(b) > 0
        # Detections at the top-k cut-off may swap with equal-scored neighbours; compare the rest.
        keep = a.scores > a.scores.min() + 1e-4
        assert matched(a.bboxes[keep], a.scores[keep], a.labels[keep], b.bboxes, b.scores, b.labels)


def test_switch_to_deploy_refuses_a_detector_below_lambda_one_and_changes_nothing():
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(Config.fromfile(RETINANET))
    set_act_lambda(model, 0.9)
    keys = list(model.state_dict())
    with pytest.raises(RuntimeError, match='lambda=0.9'):
        switch_to_deploy(model)
    assert list(model.state_dict()) == keys


def test_switch_to_deploy_needs_vanillanet_layers():
    with pytest.raises(ValueError, match='no VanillaNet layers'):
        switch_to_deploy(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_the_tool_converts_the_ema_weights_when_the_checkpoint_has_them(tmp_path):
    cfg = Config.fromfile(RETINANET)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(cfg)
    set_act_lambda(model, 1.0)
    ema_hook = EMAHook()
    ema_hook.ema_model = ExponentialMovingAverage(model)
    randomize_bns(ema_hook.ema_model.module)  # the average differs from the trained weights
    # Saved as mmengine's runner saves it: EMAHook swaps the averaged weights into state_dict.
    checkpoint = dict(state_dict=model.state_dict())
    ema_hook.before_save_checkpoint(None, checkpoint)
    torch.save(checkpoint, tmp_path / 'ema.pth')

    report = reparameterize_checkpoint(cfg, str(tmp_path / 'ema.pth'), str(tmp_path / 'deploy.pth'))
    assert report['source'] == 'EMA weights (state_dict)' and report['max_rel_diff'] < 1e-4
    expected = switch_to_deploy(copy.deepcopy(ema_hook.ema_model.module).eval()).state_dict()
    saved = torch.load(tmp_path / 'deploy.pth')
    assert saved['meta']['act_lambda'] == 1.0 and saved['meta']['weights'] == 'EMA weights (state_dict)'
    assert all(torch.allclose(saved['state_dict'][k], v) for k, v in expected.items())

    report = reparameterize_checkpoint(cfg, str(tmp_path / 'ema.pth'), str(tmp_path / 'plain.pth'), use_ema=False)
    assert report['source'] == 'trained weights (ema_state_dict)'
    expected = switch_to_deploy(model.eval()).state_dict()
    saved = torch.load(tmp_path / 'plain.pth')
    assert all(torch.allclose(saved['state_dict'][k], v) for k, v in expected.items())


@pytest.mark.slow
def test_the_tool_names_a_bad_checkpoint_and_writes_nothing(tiny_detection_run, tmp_path):
    cfg = Config.fromfile(RETINANET)
    out = tmp_path / 'out.pth'
    with pytest.raises(FileNotFoundError, match='nope.pth not found'):
        reparameterize_checkpoint(cfg, str(tmp_path / 'nope.pth'), str(out))
    (tmp_path / 'junk.pth').write_text('not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth is not a PyTorch checkpoint'):
        reparameterize_checkpoint(cfg, str(tmp_path / 'junk.pth'), str(out))
    with pytest.raises(RuntimeError, match='lambda=0.*DeepTrainingHook'):
        reparameterize_checkpoint(cfg, str(tiny_detection_run['half_trained']), str(out))
    reparameterize_checkpoint(cfg, str(tiny_detection_run['trained']), str(tmp_path / 'deploy.pth'))
    with pytest.raises(ValueError, match='already in deploy form'):
        reparameterize_checkpoint(cfg, str(tmp_path / 'deploy.pth'), str(out))
    assert not out.exists()


@pytest.mark.slow
def test_the_lambda_of_a_checkpoint_is_recoverable(tiny_detection_run):
    cfg = Config.fromfile(RETINANET)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = build_model(cfg)
    for path, lam in [(tiny_detection_run['half_trained'], 0.0), (tiny_detection_run['trained'], 1.0)]:
        model.load_state_dict(torch.load(path)['state_dict'])
        assert get_act_lambda(model) == lam
