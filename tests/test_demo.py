"""The README's main job, in miniature: every step of `make demo` runs and the summary table comes out."""
import json
import os
import subprocess
import sys

from .conftest import ROOT


def test_the_main_job_runs_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools/demo.py'), '--quick', '--num-train', '16', '--num-val', '8'],
        cwd=tmp_path, env=dict(os.environ, PYTHONUNBUFFERED='1'), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
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
