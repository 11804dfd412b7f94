"""The README's main job, in miniature: every step of `make demo` runs, one line per stage, and the summary table
comes out."""
import io
import json
import os
import re
import subprocess
import sys

import pytest

from mmvanilla.datasets import generate_synthetic_coco, generate_synthetic_image_folder
from mmvanilla.demo import StageDisplay, StageFailed, progress_of, run_stage, stage_count

from .conftest import ROOT


@pytest.mark.slow
def test_the_main_job_runs_end_to_end(tmp_path):
    # Sets of other sizes where `make demo` keeps its own: the quick run must neither fail on them nor touch them.
    generate_synthetic_coco(tmp_path / 'data/synthetic_coco', num_train=2, num_val=1)
    generate_synthetic_image_folder(tmp_path / 'data/synthetic_imagenet', num_train=1, num_val=1)
    before = sorted(str(p) for p in (tmp_path / 'data').rglob('*'))

    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools/demo.py'), '--quick', '--num-train', '16', '--num-val', '8'],
        cwd=tmp_path, env=dict(os.environ, PYTHONUNBUFFERED='1'), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # One line per stage, each with its log, then the summary: not every tool's output.
    stages = re.findall(r'^\[ ?(\d+)/16\] (.+?) +\[#{20}\] 100% +\d+:\d\d', proc.stdout, re.M)
    assert [int(n) for n, _ in stages] == list(range(1, 17)) and stage_count() == 16
    assert stages[2][1] == 'RetinaNet: train' and stages[-1][1] == 'Classifier: test deploy form'
    assert len(out.splitlines()) < 60 and 'Epoch(train)' not in out
    assert 'Epoch(train)' in (tmp_path / 'work_dirs/demo/retinanet/train.log').read_text()
    detection = '| box mAP | box mAP50 | mask mAP | mask mAP50 | train time | test time | test images/s |'
    assert f'| model | form {detection}' in out
    assert '| model | form | top-1 % | top-2 % | train time | test time | test images/s |' in out
    for model in ('RetinaNet', 'Mask R-CNN', 'Classifier'):
        for form in ('train', 'deploy'):
            assert f'| {model} | {form} |' in out
    for job, drawn in (('retinanet', 6), ('mask_r_cnn', 6), ('classifier', 0)):
        work = tmp_path / 'work_dirs/demo' / job
        train, deploy = (json.loads((work / f'metrics_{form}.json').read_text()) for form in ('train', 'deploy'))
        assert train.keys() == deploy.keys() and deploy['act_lambda'] == 1.0
        assert len(list(work.glob('vis/*.png'))) == drawn
    assert sorted(str(p) for p in (tmp_path / 'data').rglob('*') if 'synthetic_coco_' not in str(p)
                  and 'synthetic_imagenet_' not in str(p)) == before


def test_a_failed_stage_shows_its_last_lines_and_names_its_log(tmp_path):
    stream = io.StringIO()
    command = [sys.executable, '-c', 'import sys\nfor i in range(30): print(f"line {i}")\nsys.exit(3)']
    with pytest.raises(StageFailed, match=rf'stage "RetinaNet: train" failed with exit code 3: its last lines are '
                                          rf'above; full log: {tmp_path}/train.log'):
        run_stage(StageDisplay(16, stream), 'RetinaNet: train', command, tmp_path / 'train.log')
    shown = stream.getvalue()
    assert 'RetinaNet: train' in shown.splitlines()[0] and 'FAILED (exit 3)' in shown.splitlines()[0]
    assert '    line 29' in shown and '    line 10' in shown and 'line 9\n' not in shown  # the last 20 lines
    assert (tmp_path / 'train.log').read_text().count('\n') == 30


def test_verbose_stages_show_everything_and_progress_is_read_from_mmengines_lines(tmp_path):
    stream = io.StringIO()
    run_stage(StageDisplay(1, stream), 'say', [sys.executable, '-c', 'print("hello")'], tmp_path / 'say.log',
              verbose=True)
    assert stream.getvalue().startswith('hello\n[1/1] say')
    line = ('11/23 02:30:00 - mmengine - INFO - Epoch(train)  [3][25/75]  lr: 2.0e-03  eta: 0:01:30  time: 0.5')
    assert progress_of(line, elapsed=30.0) == dict(fraction=0.25, detail='epoch 3')
    assert progress_of('Epoch(test) [10/20]    data_time: 0.01', 5.0) == dict(fraction=0.5, detail='')
    assert progress_of('loading annotations into memory...', 1.0) is None
