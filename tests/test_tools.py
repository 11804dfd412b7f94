"""The command-line tools, run as a user runs them, on a tiny trained detector (see conftest.py)."""
import json
import re

import pytest
import torch
from mmengine.config import Config

from mmvanilla.apis import build_model

from .conftest import run_tool

pytestmark = pytest.mark.slow

# A model trained for 8 iterations scores below the usual 0.05 threshold; keep every box so COCO mAP is computed.
ALL_BOXES = 'model.test_cfg.score_thr=0.0'


def test_train_logs_progress_with_eta_and_the_annealed_lambda(tiny_detection_run):
    log = next(tiny_detection_run['work'].glob('*/*.log')).read_text()
    assert re.search(r'Epoch\(train\) \[1\]\[2/4\].*eta: .*act_lambda: 0\.0000', log)
    assert re.search(r'Epoch\(train\) \[2\]\[2/4\].*eta: .*act_lambda: 1\.0000', log)
    assert re.search(r'Epoch\(val\) \[2\].*act_lambda: 1\.0000', log)


def test_test_tool_reports_coco_box_map_and_speed(tiny_detection_run):
    run = tiny_detection_run
    proc = run_tool('test.py', run['config'], str(run['trained']), '--work-dir', 'work_test',
                    '--metrics-out', 'metrics.json', '--cfg-options', ALL_BOXES, cwd=run['cwd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run['cwd'] / 'metrics.json').read_text())
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0 and metrics['images/s'] > 0
    assert metrics['act_lambda'] == 1.0  # read back from the checkpoint


def test_reparameterized_checkpoint_loads_strictly_and_evaluates_the_same(tiny_detection_run):
    run = tiny_detection_run
    proc = run_tool('reparameterize.py', run['config'], str(run['trained']), 'deploy.pth', cwd=run['cwd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rel = float(re.search(r'max rel diff ([0-9.e+-]+)', proc.stdout).group(1))
    assert rel < 1e-4

    cfg = Config.fromfile(run['config'])
    deploy_model = build_model(cfg, deploy=True)
    deploy_model.load_state_dict(torch.load(run['cwd'] / 'deploy.pth')['state_dict'], strict=True)

    # A user's config that inherits the packaged deploy config (its settings then build in the mmvanilla scope).
    (run['cwd'] / 'my_deploy.py').write_text("_base_ = 'mmvanilla::deploy/retinanet_vanillanet_tiny_synthetic_deploy.py'\n")
    maps = {}
    for name, config, ckpt, options in [('train', run['config'], run['trained'], []),
                                        ('deploy', run['config'], 'deploy.pth', ['model.backbone.deploy=True']),
                                        ('inherited', 'my_deploy.py', 'deploy.pth', [])]:
        proc = run_tool('test.py', config, str(ckpt), '--work-dir', f'work_{name}', '--metrics-out',
                        f'{name}.json', '--cfg-options', ALL_BOXES, *options, cwd=run['cwd'])
        assert proc.returncode == 0, proc.stderr[-3000:]
        maps[name] = json.loads((run['cwd'] / f'{name}.json').read_text())['coco/bbox_mAP']
    assert abs(maps['train'] - maps['deploy']) <= 0.001 and maps['inherited'] == maps['deploy']


def test_reparameterize_refuses_a_checkpoint_below_lambda_one(tiny_detection_run):
    run = tiny_detection_run
    proc = run_tool('reparameterize.py', run['config'], str(run['half_trained']), 'nope.pth', cwd=run['cwd'])
    assert proc.returncode == 2
    assert 'lambda=0' in proc.stderr and 'Train until DeepTrainingHook reaches 1' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (run['cwd'] / 'nope.pth').exists()


def test_a_missing_data_folder_gets_one_clear_message(tmp_path):
    proc = run_tool('train.py', str(tmp_path.parent / 'missing.py'), cwd=tmp_path)
    assert proc.returncode == 2 and 'config file' in proc.stderr
    from .conftest import RETINANET
    proc = run_tool('train.py', RETINANET, cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'train annotation file data/synthetic_coco/annotations/instances_train.json not found' in proc.stderr


def test_an_unknown_backbone_arch_gets_one_clear_message(tiny_detection_run):
    run = tiny_detection_run
    proc = run_tool('test.py', run['config'], str(run['trained']), '--cfg-options', 'model.backbone.arch=14',
                    cwd=run['cwd'])
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'unknown VanillaNet arch 14; valid names: 5, 6' in proc.stderr


def test_a_checkpoint_of_another_act_num_gets_one_clear_message(tiny_detection_run):
    run = tiny_detection_run
    proc = run_tool('test.py', run['config'], str(run['trained']), '--cfg-options', 'model.backbone.act_num=3',
                    cwd=run['cwd'])
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'checkpoint has 5x5 activation kernels but the model has act_num=3: set act_num=2' in proc.stderr
