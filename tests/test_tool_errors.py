"""Nothing lost, nothing silent: bad inputs through the tools, as a user runs them.

Each case gets one line that names the file or setting, the cause and the fix, exit status 2, and leaves every
file as it was (interrupted trainings: tests/test_interrupts.py). The tiny trained RetinaNet of
``conftest.tiny_detection_run`` is the good input the bad ones stand beside.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvanilla.apis import build_model

from .conftest import ROOT, run_tool

pytestmark = pytest.mark.slow  # every test runs the tools, beside a tiny trained detector

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
             'is not a PyTorch checkpoint (not a zip archive'),
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


def spoil(ann: Path, change) -> None:
    """Rewrites a COCO annotation file with ``change(coco)`` applied."""
    coco = json.loads(ann.read_text())
    change(coco)
    ann.write_text(json.dumps(coco))


def test_annotations_that_mmdet_would_train_or_evaluate_wrongly_are_refused_before_the_work(tiny_detection_run,
                                                                                         bad, tmp_path):
    run = tiny_detection_run
    data = tmp_path / 'data'
    options = spoilt_data(run, data)
    ann = data / 'annotations/instances_val.json'
    pristine = ann.read_text()

    def test_tool(config, checkpoint, *fragments):
        line = refused(run_tool('test.py', config, str(checkpoint), '--work-dir', str(tmp_path / 'work'),
                                '--cfg-options', *options, cwd=tmp_path), f'test annotation file {ann}', *fragments)
        assert not (tmp_path / 'work').exists()
        ann.write_text(pristine)
        return line

    def same_id(coco):
        coco['images'][1]['id'] = coco['images'][0]['id']
    spoil(ann, same_id)
    test_tool(run['config'], run['trained'], '1 image ids are used by more than one image (e.g. id',
              'each image needs an id of its own', 'renumber them')

    def same_annotation_id(coco):
        coco['annotations'][1]['id'] = coco['annotations'][0]['id']
    spoil(ann, same_annotation_id)
    test_tool(run['config'], run['trained'], '1 annotation ids are used more than once')

    spoil(ann, lambda coco: coco.update(annotations=[]))
    test_tool(run['config'], run['trained'], 'lists 8 images but no annotations: there is nothing to evaluate '
              'against')

    spoil(ann, lambda coco: [c.update(name=c['name'].upper()) for c in coco['categories']])
    test_tool(run['config'], run['trained'], "none of the config's classes (circle, square, triangle, star) is among "
              'its categories (CIRCLE, SQUARE', "set the dataset's metainfo=dict(classes=...)")

    def short_polygon(coco):
        coco['annotations'][2]['segmentation'] = [[1.0, 2.0, 3.0, 4.0]]
    spoil(ann, short_polygon)
    test_tool(MASK_RCNN, bad / 'mask_rcnn.pth', '1 mask polygons have fewer than 3 points',
              f'annotation id {json.loads(pristine)["annotations"][2]["id"]}', '4 numbers')


def test_a_setting_the_model_does_not_have_is_named_with_the_closest_one(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    work = tmp_path / 'work'
    refused(run_tool('train.py', run['config'], '--work-dir', str(work), '--cfg-options', 'model.backbone.act_nun=3',
                     cwd=run['cwd']),
            "model.backbone.act_nun: VanillaNet has no setting 'act_nun'; did you mean act_num?")
    refused(run_tool('train.py', run['config'], '--work-dir', str(work), '--cfg-options',
                     'model.backbone.out_indices=[3,1,2]', cwd=run['cwd']),
            'out_indices (3, 1, 2) must be increasing, each stage once (e.g. (1, 2, 3))', 'wrong strides')
    refused(run_tool('train.py', run['config'], '--work-dir', str(work), '--cfg-options', 'model.backbone.deploy=True',
                     'model.backbone.with_cp=True', cwd=run['cwd']),
            'model.backbone.deploy=True builds the re-parameterized form',
            'train with deploy=False', 'custom_hooks=[]')
    assert not work.exists()  # no log folder, no config dump


def nonfinite_checkpoint(run: dict, path: Path, value: float, ddp: bool = False) -> str:
    """The tiny trained checkpoint with one weight spoilt by ``value`` (NaN or inf); returns that weight's name."""
    checkpoint = torch.load(run['trained'], weights_only=True)
    name = 'neck.lateral_convs.1.conv.weight'
    checkpoint['state_dict'][name].view(-1)[3] = value
    if ddp:
        checkpoint['state_dict'] = {f'module.{k}': v for k, v in checkpoint['state_dict'].items()}
    torch.save(checkpoint, path)
    return name


def test_non_finite_weights_are_refused_by_every_tool_with_the_first_such_weight(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    name = nonfinite_checkpoint(run, tmp_path / 'nan.pth', float('nan'))
    nonfinite_checkpoint(run, tmp_path / 'inf.pth', float('inf'))
    for tool, args, checkpoint, what in (
            ('test.py', ['--metrics-out', str(tmp_path / 'metrics.json')], 'nan.pth', 'NaN'),
            ('reparameterize.py', [str(tmp_path / 'deploy.pth')], 'nan.pth', 'NaN'),
            ('export_onnx.py', ['--out', str(tmp_path / 'model.onnx')], 'inf.pth', 'infinite values')):
        refused(run_tool(tool, run['config'], str(tmp_path / checkpoint), *args, cwd=run['cwd']),
                f'{tmp_path / checkpoint}: its weight {name} holds {what} (1 of ', 'the training that wrote it diverged')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['inf.pth', 'nan.pth']


def test_a_checkpoint_saved_inside_ddp_converts_as_the_runner_loads_it(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    checkpoint = torch.load(run['trained'], weights_only=True)
    checkpoint['state_dict'] = {f'module.{k}': v for k, v in checkpoint['state_dict'].items()}
    torch.save(checkpoint, tmp_path / 'ddp.pth')
    proc = run_tool('reparameterize.py', run['config'], str(tmp_path / 'ddp.pth'), str(tmp_path / 'deploy.pth'),
                    cwd=run['cwd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(not k.startswith('module.') for k in torch.load(tmp_path / 'deploy.pth')['state_dict'])


def test_a_nan_loss_stops_training_with_one_line_unless_allowed(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    options = ['--cfg-options', 'optim_wrapper.optimizer.lr=1e8', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=10',
               'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1']
    line = refused(run_tool('train.py', run['config'], '--work-dir', str(tmp_path / 'stopped'), *options,
                            cwd=run['cwd']),
                   'training stopped: the loss is nan at epoch ', 'Usual causes: the learning rate (',
                   ') too high for this batch size',
                   '--allow-nonfinite-loss to train on', 'the newest complete checkpoint is')
    stopped_at = int(re.search(r'iteration (\d+)', line).group(1))
    assert stopped_at <= 8  # the first non-finite loss, not a whole run of them
    proc = run_tool('train.py', run['config'], '--work-dir', str(tmp_path / 'allowed'), '--allow-nonfinite-loss',
                    *options, cwd=run['cwd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'allowed/epoch_2.pth').exists()


def test_a_full_disk_while_saving_names_the_checkpoint(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    proc = subprocess.run([sys.executable, str(ROOT / 'tests/faults.py'), 'ENOSPC@save', str(ROOT / 'tools/train.py'),
                           run['config'], '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                           'train_cfg.max_epochs=1', 'train_cfg.val_interval=10'],
                          cwd=run['cwd'], capture_output=True, text=True, timeout=600)
    refused(proc, f'no space left to write {tmp_path}/work/epoch_1.pth (no space left on device;',
            'free some space or write it elsewhere; epoch_1.pth was not written')
    assert not (tmp_path / 'work/epoch_1.pth').exists() and not list((tmp_path / 'work').glob('.*partial*'))


def test_show_dir_never_overwrites_and_is_checked_before_the_evaluation(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    data = run['cwd'] / 'data/synthetic_coco'
    kept = tmp_path / 'kept'
    kept.mkdir()
    (kept / 'drawing.png').write_bytes(b'a drawing the user keeps')
    read_only = Path('/proc/1/drawings') if os.geteuid() == 0 else tmp_path / 'read_only/drawings'
    if os.geteuid() != 0:
        read_only.parent.mkdir()
        read_only.parent.chmod(0o555)
    before = snapshot(data), snapshot(tmp_path)
    for show_dir, extra, fragments in (
            (kept, [], [f'--show-dir {kept} holds 1 files or folders', 'pass --force, or give a new or empty folder']),
            (data / 'val', ['--force'], [f"--show-dir {data / 'val'} lies in the data's folder", 'outside the data']),
            (data, ['--force'], [f"--show-dir {data} lies in the data's folder"]),
            (read_only, [], [f'cannot write --show-dir {read_only}: no write permission'])):
        proc = run_tool('test.py', run['config'], str(run['trained']), '--show-dir', str(show_dir), *extra,
                        '--work-dir', str(tmp_path / 'work'), cwd=run['cwd'])
        refused(proc, *fragments)
        assert 'Epoch(test)' not in proc.stdout + proc.stderr  # refused before the evaluation
    assert (snapshot(data), snapshot(tmp_path)) == before


def test_a_timm_checkpoint_loads_as_a_detection_backbone_and_a_foreign_one_is_refused(tiny_detection_run,
                                                                                     tmp_path):
    from mmvanilla.models.timm_models import TimmVanillaNet
    run = tiny_detection_run
    backbone = Config.fromfile(run['config']).model.backbone
    timm_model = TimmVanillaNet(arch=dict(backbone.arch), act_num=backbone.act_num, num_classes=10)
    torch.save({'model': timm_model.state_dict()}, tmp_path / 'timm.pth')
    other = TimmVanillaNet(arch=dict(backbone.arch), act_num=3, num_classes=10)
    torch.save(other.state_dict(), tmp_path / 'act_num3.pth')
    torch.save({'state_dict': {'encoder.weight': torch.zeros(3)}}, tmp_path / 'foreign.pth')

    def train(checkpoint, *extra):
        config = tmp_path / f'{checkpoint.stem}_config.py'  # a user's config on top of the tiny one
        config.write_text(f'_base_ = {run["config"]!r}\n'
                          f'model = dict(backbone=dict(init_cfg=dict(_delete_=True, type="Pretrained", '
                          f'checkpoint="{checkpoint}")))\n')
        return run_tool('train.py', str(config), '--work-dir', str(tmp_path / 'work'), *extra, cwd=run['cwd'])

    refused(train(tmp_path / 'foreign.pth'), f'model.backbone.init_cfg: checkpoint {tmp_path}/foreign.pth does not '
            'fit this VanillaNet: the checkpoint holds no weight of this VanillaNet (its keys: encoder.weight')
    refused(train(tmp_path / 'act_num3.pth'), 'does not fit this VanillaNet: checkpoint has 7x7 activation kernels '
            'but the model has act_num=2: set act_num=3')
    assert not (tmp_path / 'work').exists()
    proc = train(tmp_path / 'timm.pth', '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=10')
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    own = len([k for k in timm_model.backbone.state_dict() if not k.endswith('num_batches_tracked')])
    assert f'VanillaNet: the checkpoint gives {own} of its {own} weights' in output
    head = len([k for k in timm_model.state_dict() if k.startswith('head.')])
    assert "loading the backbone of a whole model's checkpoint" in output
    assert f'left out its {head} other tensors (head)' in output


def test_a_symbolic_link_that_loops_is_called_so(tiny_detection_run, tmp_path):
    run = tiny_detection_run
    (tmp_path / 'loop.pth').symlink_to(tmp_path / 'loop.pth')
    (tmp_path / 'dangling.pth').symlink_to(tmp_path / 'gone.pth')
    refused(run_tool('test.py', run['config'], str(tmp_path / 'loop.pth'), cwd=run['cwd']),
            f'checkpoint {tmp_path}/loop.pth is a symbolic link that loops')
    refused(run_tool('test.py', run['config'], str(tmp_path / 'dangling.pth'), cwd=run['cwd']),
            f'checkpoint {tmp_path}/dangling.pth is a symbolic link to {tmp_path}/gone.pth, which does not exist')


@pytest.mark.parametrize('tool, args, fragments', [
    ('benchmark.py', ['--repeats', '0'], ['repeats=0: give a positive integer']),
    ('benchmark.py', ['--archs', '14'], ['unknown VanillaNet arch', "'14'", 'valid names: 5, 6']),
    ('benchmark.py', ['--archs', '5', '--quick'], ['--quick times a tiny model of its own and takes no --archs']),
    ('describe_variants.py', ['--size', '0'], ['--size 0 is too small', 'at least 32']),
    ('make_synthetic_data.py', ['coco', '--num-train', '0'], ['num_train']),
])
def test_tool_arguments_out_of_range_get_one_line(tool, args, fragments, tmp_path):
    refused(run_tool(tool, *args, cwd=tmp_path), *fragments)
    assert not list(tmp_path.iterdir())
