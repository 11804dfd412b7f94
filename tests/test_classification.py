"""Classification end to end, as a user runs it: train, test (top-1/top-5), re-parameterize, test the deploy form."""
import json

import pytest

from mmvanilla.datasets import generate_synthetic_image_folder

from .conftest import ROOT, run_tool

pytestmark = pytest.mark.slow

CONFIG = str(ROOT / 'configs/vanillanet_tiny_synthetic_cls.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The classification example in miniature: 2 epochs (lambda 0, then 1) on a few images per class."""
    cwd = tmp_path_factory.mktemp('cls')
    generate_synthetic_image_folder(cwd / 'data/synthetic_imagenet', num_train=4, num_val=2, seed=1)
    proc = run_tool('train.py', CONFIG, '--work-dir', 'work', '--cfg-options', 'train_cfg.max_epochs=2',
                    'train_cfg.val_interval=2', 'custom_hooks.0.decay_epochs=1', 'train_dataloader.batch_size=4',
                    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1', cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(cwd=cwd, log=proc.stdout + proc.stderr, checkpoint=cwd / 'work/epoch_2.pth')


def test_training_anneals_lambda_and_validates_top1(trained):
    assert 'act_lambda: 1.0000' in trained['log'] and 'accuracy/top1' in trained['log']
    assert trained['checkpoint'].is_file()


def test_test_tool_reports_accuracy_of_both_forms_alike(trained):
    cwd, ckpt = trained['cwd'], str(trained['checkpoint'])
    proc = run_tool('test.py', CONFIG, ckpt, '--work-dir', 'test_train', '--metrics-out', 'train.json', cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_tool('reparameterize.py', CONFIG, ckpt, 'deploy.pth', cwd=cwd)
    assert proc.returncode == 0 and 'max rel diff' in proc.stdout, proc.stderr[-3000:]
    proc = run_tool('test.py', CONFIG, 'deploy.pth', '--work-dir', 'test_deploy', '--metrics-out', 'deploy.json',
                    '--cfg-options', 'model.network.deploy=True', cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train, deploy = (json.loads((cwd / f'{form}.json').read_text()) for form in ('train', 'deploy'))
    assert 0.0 <= train['accuracy/top1'] <= 100.0 and train['act_lambda'] == 1.0
    assert deploy['accuracy/top1'] == train['accuracy/top1']
    assert deploy['accuracy/top2'] == train['accuracy/top2']


def test_missing_imagenet_folders_are_named_with_the_fix(tmp_path):
    proc = run_tool('train.py', str(ROOT / 'configs/vanillanet5_imagenet.py'), cwd=tmp_path)
    assert proc.returncode == 2
    assert 'data/imagenet/train not found' in proc.stderr and '--cfg-options' in proc.stderr
