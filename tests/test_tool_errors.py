"""Nothing lost, nothing silent: bad inputs through the tools, as a user runs them.

Each case gets one line that names the file or setting, the cause and the fix, exit status 2, and leaves every
file as it was; an interrupted training resumes from its newest complete checkpoint. The tiny trained RetinaNet
of ``conftest.tiny_detection_run`` is the good input the bad ones stand beside.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvanilla.apis import build_model

from .conftest import RETINANET, ROOT, run_tool

MASK_RCNN = str(ROOT / 'configs/mask_rcnn_vanillanet_tiny_synthetic.py')


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with a hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else 'dir'
            for p in sorted(root.rglob('*'))}


def refused(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Asserts the tool ended with status 2 and one ``error:`` line holding every fragment; returns the line."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert 'weights_only=False' not in output
    return errors[0]


@pytest.fixture(scope='module')
def bad(tiny_detection_run, tmp_path_factory):
    """Files a user may give by mistake or malice, beside the trained ones: a Mask R-CNN checkpoint, random bytes,
    an empty file, a pickled ``os.system`` call, and a copy of the data to spoil."""
    root = tmp_path_factory.mktemp('bad')
    model = build_model(Config.fromfile(MASK_RCNN))
    torch.save(dict(state_dict=model.state_dict(), meta=dict(experiment_name='mask_rcnn_20261123_021800')),
               root / 'mask_rcnn.pth')
    (root / 'random.pth').write_bytes(bytes(range(256)) * 64)
    (root / 'empty.pth').write_bytes(b'')

    class Exploit:
        def __reduce__(self):
            return os.system, (f'touch {root / "pwned"}',)

    torch.save({'state_dict': {}, 'meta': Exploit()}, root / 'evil.pth')
    return root


def test_reparameterize_never_replaces_a_file_unasked_nor_its_input(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    shutil.copy(run['trained'], tmp_path / 'same.pth')
    (tmp_path / 'existing.pth').write_bytes(b'a file the user keeps')
    (tmp_path / 'folder').mkdir()
    before = snapshot(tmp_path)
    for out, extra, fragments in (
            ('existing.pth', [], ['existing.pth exists: pass --force to replace it']),
            ('same.pth', ['--force'], ['same.pth is the input', 'optimizer state and EMA weights']),
            ('folder', [], ['deploy checkpoint folder is a folder: give a file name']),
            ('missing/deploy.pth', [], ['folder', 'missing of the deploy checkpoint', 'does not exist: create it'])):
        checkpoint = 'same.pth' if out == 'same.pth' else str(run['trained'])
        proc = run_tool('reparameterize.py', run['config'], checkpoint, out, *extra, cwd=tmp_path)
        refused(proc, *fragments)
        assert 'converted' not in proc.stdout + proc.stderr  # refused before the conversion, not after
    assert snapshot(tmp_path) == before

    proc = run_tool('reparameterize.py', run['config'], str(run['trained']), 'existing.pth', '--force', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / 'existing.pth')['meta']['deploy'] is True
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []  # no temporary left


def test_export_checks_its_output_and_the_input_size_before_exporting(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    (tmp_path / 'folder.onnx').mkdir()
    (tmp_path / 'kept.onnx').write_bytes(b'an earlier export')
    before = snapshot(tmp_path)
    trained = str(run['trained'])
    for args, fragments in (
            (['--out', 'folder.onnx'], ['folder.onnx is a folder: give a file name']),
            (['--out', 'kept.onnx'], ['kept.onnx exists: pass --force']),
            (['--out', 'x.onnx', '--shape', '0', '0'], ['--shape 0 0', 'sizes must be positive integers']),
            (['--out', 'x.onnx', '--shape', '31', '31'], ['--shape 31 31 is too small for this model',
                                                          'height and width must be at least 32'])):
        refused(run_tool('export_onnx.py', run['config'], trained, *args, cwd=tmp_path), *fragments)
    assert snapshot(tmp_path) == before


def test_a_checkpoint_of_another_model_is_refused_before_evaluation_or_resuming(tiny_detection_run, bad, tmp_path):
    run = tiny_detection_run
    before = snapshot(run['cwd'])
    line = refused(run_tool('test.py', run['config'], str(bad / 'mask_rcnn.pth'), cwd=run['cwd']),
                   "mask_rcnn.pth does not fit the config's RetinaNet: it holds a two-stage detector with a mask head",
                   'trained as mask_rcnn', '19 model weights missing from it (e.g. neck.fpn_convs.4.conv.weight, '
                   'bbox_head.')
    assert 'To evaluate, use the checkpoint trained with this config' in line
    refused(run_tool('train.py', run['config'], '--work-dir', str(tmp_path / 'work'), '--resume',
                     str(bad / 'mask_rcnn.pth'), cwd=run['cwd']),
            "mask_rcnn.pth does not fit the config's RetinaNet", 'To resume, use the checkpoint trained')
    refused(run_tool('train.py', MASK_RCNN, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                     f'load_from={run["trained"]}', cwd=run['cwd']),
            "epoch_2.pth does not fit the config's MaskRCNN: it holds a RetinaNet",
            'For load_from, give load_from a checkpoint of this whole model')
    assert snapshot(run['cwd']) == before and not (tmp_path / 'work').exists()


def test_a_file_that_is_no_checkpoint_is_named_by_every_tool(tiny_detection_run, bad, tmp_path):
    run = tiny_detection_run
    before = snapshot(run['cwd'])
    work = ['--work-dir', str(tmp_path / 'work')]
    for tool, args, name, fragment in (
            ('test.py', [run['config'], str(bad / 'random.pth')], 'random.pth',
             'is not a PyTorch checkpoint (unreadable pickle'),
            ('convert_checkpoint.py', [str(bad / 'random.pth'), str(tmp_path / 'out.pth')], 'random.pth',
             'is not a PyTorch checkpoint'),
            ('train.py', [run['config'], *work, '--resume', str(bad / 'empty.pth')], 'empty.pth',
             'is empty (0 bytes)'),
            ('train.py', [run['config'], *work, '--cfg-options', f'load_from={bad / "empty.pth"}'], 'empty.pth',
             'is empty (0 bytes)')):
        refused(run_tool(tool, *args, cwd=run['cwd']), name, fragment,
                "use a checkpoint written by mmengine's runner or torch.save")
    assert snapshot(run['cwd']) == before and not (tmp_path / 'work').exists() and not (tmp_path / 'out.pth').exists()


def test_a_checkpoint_that_pickles_code_is_refused_by_every_tool_and_never_run(tiny_detection_run, bad, tmp_path):
    run = tiny_detection_run
    evil = str(bad / 'evil.pth')
    for tool, args in (('test.py', [run['config'], evil]),
                       ('convert_checkpoint.py', [evil, str(tmp_path / 'out.pth')]),
                       ('train.py', [run['config'], '--work-dir', str(tmp_path / 'work'), '--resume', evil]),
                       ('reparameterize.py', [run['config'], evil, str(tmp_path / 'out.pth')]),
                       ('export_onnx.py', [run['config'], evil, '--out', str(tmp_path / 'out.onnx')])):
        refused(run_tool(tool, *args, cwd=run['cwd']), f'refused to load checkpoint {evil}: it pickles posix.system',
                'Do not load this file')
    assert not (bad / 'pwned').exists() and not list(tmp_path.iterdir())


def test_a_broken_config_is_named_with_the_line_or_setting(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    (tmp_path / 'broken.py').write_text("model = dict(\n    type='RetinaNet',\n    backbone=dict(type='VanillaNet'\n")
    refused(run_tool('train.py', str(tmp_path / 'broken.py'), cwd=tmp_path), 'broken.py, line',
            'fix the Python syntax there')
    refused(run_tool('test.py', run['config'], str(run['trained']), '--cfg-options', 'model.backbone.norm_cfg.type=GN',
                     cwd=run['cwd']),
            "model.backbone.norm_cfg.type='GN'", "must be a BatchNorm type; set model.backbone.norm_cfg.type='BN'")


def spoilt_data(run: dict, root: Path) -> list[str]:
    """A copy of the tiny run's data in ``root``; returns the ``--cfg-options`` that evaluate on it."""
    shutil.copytree(run['cwd'] / 'data/synthetic_coco', root)
    return [f'test_dataloader.dataset.data_root={root}/',
            f'test_evaluator.ann_file={root}/annotations/instances_val.json']


def test_annotations_and_images_that_cannot_be_used_are_named(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    data = tmp_path / 'data'
    options = spoilt_data(run, data)
    ann = data / 'annotations/instances_val.json'
    coco = json.loads(ann.read_text())
    val = sorted((data / 'val').iterdir())

    def test_tool(*fragments):
        return refused(run_tool('test.py', run['config'], str(run['trained']), '--work-dir', str(tmp_path / 'work'),
                                '--cfg-options', *options, cwd=tmp_path), *fragments)

    ann.write_text(json.dumps(coco)[:-40])
    test_tool(f'test annotation file {ann} is not valid JSON (', 'repair or regenerate it')
    ann.write_text(json.dumps(dict(coco, images=[], annotations=[])))
    test_tool(f'test annotation file {ann} lists no images: the test split is empty')
    ann.write_text(json.dumps(coco))
    val[0].rename(tmp_path / 'moved.png')
    test_tool(f'test split: 1 of the 8 images listed in {ann} are missing from {data}/val/', 'put them there')
    (tmp_path / 'moved.png').rename(val[0])
    assert not (tmp_path / 'work').exists()
    val[1].write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 64)
    test_tool(f'image {val[1]} cannot be decoded (corrupt, truncated or not an image)',
              'replace it, or remove it from the annotation file')


def test_invalid_ground_truth_is_reported_and_left_out_as_mmdet_leaves_it_out_of_training(tiny_detection_run,
                                                                                        tmp_path):
    run = tiny_detection_run
    data = tmp_path / 'data'
    options = spoilt_data(run, data)
    ann = data / 'annotations/instances_val.json'
    coco = json.loads(ann.read_text())
    image = coco['images'][0]
    bad_boxes = [[5, 5, 0, 10], [5, 5, 10, -2], [image['width'] + 5, 5, 10, 10]]
    extra = [dict(id=10_000 + i, image_id=image['id'], category_id=coco['categories'][0]['id'], bbox=box,
                  area=max(box[2] * box[3], 0), iscrowd=0) for i, box in enumerate(bad_boxes)]
    ann.write_text(json.dumps(dict(coco, annotations=coco['annotations'] + extra)))
    maps = {}
    for name, root in (('clean', run['cwd'] / 'data/synthetic_coco'), ('spoilt', data)):
        opts = options if name == 'spoilt' else []
        proc = run_tool('test.py', run['config'], str(run['trained']), '--work-dir', str(tmp_path / name),
                        '--metrics-out', str(tmp_path / f'{name}.json'), '--cfg-options',
                        'model.test_cfg.score_thr=0.0',
                        *opts, cwd=run['cwd'])
        assert proc.returncode == 0, proc.stderr[-3000:]
        maps[name] = json.loads((tmp_path / f'{name}.json').read_text())['coco/bbox_mAP']
    total = len(coco['annotations']) + 3
    warning = f'{ann}: 3 of its {total} boxes are invalid (2 with non-positive size, 1 outside the image): left ' \
              'out of training, as mmdet\'s CocoDataset does, and out of the evaluation\'s ground truth'
    assert warning in proc.stdout + proc.stderr
    assert maps['spoilt'] == maps['clean']


def test_an_interrupted_training_resumes_from_its_newest_complete_checkpoint(tiny_detection_run, tmp_path):
    """A real SIGINT to a real training; then last_checkpoint is gone and a newer checkpoint is half written."""
    run = tiny_detection_run
    work = tmp_path / 'work'
    options = ['--cfg-options', 'train_dataloader.batch_size=8', 'train_cfg.val_interval=1000',
               'custom_hooks.0.decay_epochs=1', 'default_hooks.checkpoint.interval=1',
               'default_hooks.checkpoint.max_keep_ckpts=-1', 'default_hooks.logger.interval=1']
    proc = subprocess.Popen([sys.executable, str(ROOT / 'tools/train.py'), RETINANET, '--work-dir', str(work),
                             *options, 'train_cfg.max_epochs=50'], cwd=run['cwd'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
    deadline = time.monotonic() + 300
    while not (work / 'epoch_1.pth').exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    assert re.search(r'interrupted: the newest complete checkpoint is \S+epoch_\d+\.pth; continue with --resume',
                     output)
    saved = sorted(int(p.stem.split('_')[1]) for p in work.glob('epoch_*.pth'))
    newest = saved[-1]
    assert not list(work.glob('.*partial*'))  # an interrupted save leaves no temporary behind

    (work / 'last_checkpoint').unlink(missing_ok=True)  # as when the signal comes between the checkpoint and it
    whole = (work / f'epoch_{newest}.pth').read_bytes()
    (work / f'epoch_{newest + 1}.pth').write_bytes(whole[:len(whole) // 2])  # as mmengine's own saving may leave
    kept = {n: hashlib.sha1((work / f'epoch_{n}.pth').read_bytes()).hexdigest() for n in saved}

    proc = run_tool('train.py', RETINANET, '--work-dir', str(work), '--resume', *options,
                    f'train_cfg.max_epochs={newest + 1}', cwd=run['cwd'])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert f'epoch_{newest + 1}.pth is incomplete (its saving was cut short): not resumed from' in output
    assert f'resuming from {work}/epoch_{newest}.pth, the newest complete checkpoint (last_checkpoint is missing)' \
        in output
    log = sorted(work.glob('*/*.log'))[-1].read_text()
    assert re.search(rf'Epoch\(train\) +\[{newest + 1}\]', log) and not re.search(r'Epoch\(train\) +\[1\]', log)
    assert {n: hashlib.sha1((work / f'epoch_{n}.pth').read_bytes()).hexdigest() for n in saved} == kept
    assert torch.load(work / f'epoch_{newest + 1}.pth', weights_only=True)['meta']['epoch'] == newest + 1
