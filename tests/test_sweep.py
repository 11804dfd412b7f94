"""Seed sweeps (benchmarks/seed_sweep.py): several seeds per variant, the gap taken seed by seed."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from benchmarks.seed_sweep import KERNEL_ON_OFF, format_sweep_markdown, last_logged_value, plan_sweep, \
    summarize_sweep, variants_from_args

from .conftest import ROOT


def run_sweep_tool(*args: str, cwd) -> subprocess.CompletedProcess:
    """Runs ``benchmarks/seed_sweep.py`` as a user would, from ``cwd``."""
    return subprocess.run([sys.executable, str(ROOT / 'benchmarks/seed_sweep.py'), *args], cwd=cwd,
                          env=dict(os.environ, PYTHONUNBUFFERED='1'), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_every_variant_trains_with_every_seed_in_its_own_resumable_work_dir(tmp_path):
    (tmp_path / 'cfg.py').touch()
    runs = plan_sweep(tmp_path / 'cfg.py', [0, 7], {'a': ['x=1'], 'b': []}, tmp_path, ['y=2'])
    assert [(r.variant, r.seed, r.work_dir) for r in runs] == [
        ('a', 0, tmp_path / 'a/seed0'), ('a', 7, tmp_path / 'a/seed7'),
        ('b', 0, tmp_path / 'b/seed0'), ('b', 7, tmp_path / 'b/seed7')]
    command = runs[1].command
    assert command[1].endswith('tools/train.py') and command[2] == str(tmp_path / 'cfg.py') and '--resume' in command
    assert command[command.index('--cfg-options') + 1:] == ('randomness.seed=7', 'x=1', 'y=2')


@pytest.mark.parametrize('seeds, variants, message', [
    ([0, 0], {'a': [], 'b': []}, 'distinct'), ([], {'a': [], 'b': []}, 'at least one'),
    ([0], {'a': []}, 'at least two variants')])
def test_a_sweep_that_cannot_compare_is_refused(seeds, variants, message, tmp_path):
    (tmp_path / 'cfg.py').touch()
    with pytest.raises(ValueError, match=message):
        plan_sweep(tmp_path / 'cfg.py', seeds, variants, tmp_path / 'work')


def test_variants_default_to_the_kernel_on_and_off_and_need_distinct_names():
    assert variants_from_args(None) == KERNEL_ON_OFF
    assert variants_from_args([['a', 'x=1', 'y=2'], ['b']]) == {'a': ['x=1', 'y=2'], 'b': []}
    with pytest.raises(ValueError, match='names must differ'):
        variants_from_args([['a', 'x=1'], ['a', 'x=2']])


@pytest.mark.slow
def test_a_missing_config_is_named_before_anything_runs(tmp_path):
    proc = run_sweep_tool('nope.py', '--work-dir', 'sweep', cwd=tmp_path)
    assert proc.returncode == 2 and 'config nope.py not found' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'sweep').exists()


def test_the_gap_is_paired_by_seed_with_a_student_t_interval():
    results = [dict(variant=v, seed=s, metric='m', value=x) for v, xs in
               [('on', [0.30, 0.40, 0.35]), ('off', [0.31, 0.42, 0.35])] for s, x in zip([0, 1, 2], xs)]
    summary = summarize_sweep(results)
    on, off = summary['rows']
    assert summary['seeds'] == [0, 1, 2] and on['values'] == [0.30, 0.40, 0.35] and 'gap_mean' not in on
    assert on['mean'] == pytest.approx(0.35) and on['std'] == pytest.approx(0.05)
    # gaps 0.01, 0.02, 0.00: mean 0.01, sample std 0.01, t(2 dof) = 4.303
    assert off['gap_mean'] == pytest.approx(0.01)
    assert off['gap_ci95'] == pytest.approx(4.303 * 0.01 / math.sqrt(3), rel=1e-4)
    assert off['gap_bound'] == pytest.approx(0.01 + 4.303 * 0.01 / math.sqrt(3), rel=1e-4)
    assert format_sweep_markdown(summary, within=0.05).endswith(
        'off vs on within 0.05: shown: the 95% interval allows gaps up to 0.0348')
    assert 'off vs on within 0.02: not shown' in format_sweep_markdown(summary, within=0.02)


def test_the_last_logged_value_wins_across_resumed_runs(tmp_path):
    for stamp, value in [('20260101_000000', 0.1), ('20260102_000000', 0.3)]:
        folder = tmp_path / stamp / 'vis_data'
        folder.mkdir(parents=True)
        (folder / 'scalars.json').write_text(json.dumps({'loss': 1.0, 'step': 1}) + '\n'
                                             + json.dumps({'coco/bbox_mAP': value, 'step': 1}) + '\n')
    assert last_logged_value(tmp_path, 'coco/bbox_mAP') == 0.3
    with pytest.raises(RuntimeError, match=r"no 'accuracy/top1' \(it logged: coco/bbox_mAP, loss, step\)"):
        last_logged_value(tmp_path, 'accuracy/top1')


@pytest.mark.slow
def test_the_tool_pairs_kernel_on_and_off_by_seed_reuses_finished_runs_and_never_mixes_settings(tiny_detection_run):
    run = tiny_detection_run
    args = [run['config'], '--seeds', '0', '1', '--jobs', '2', '--within', '0.02', '--work-dir', 'sweep',
            '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'custom_hooks.0.decay_epochs=1',
            'train_dataloader.batch_size=4', 'model.test_cfg.score_thr=0.0']
    proc = run_sweep_tool(*args, cwd=run['cwd'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r'^\| kernel \| [0-9.]+ \| [0-9.]+ \|', proc.stdout, re.M)
    assert re.search(r'^pytorch vs kernel within 0\.02: (not )?shown', proc.stdout, re.M)
    summary = json.loads((run['cwd'] / 'sweep/summary.json').read_text())
    assert summary['metric'] == 'coco/bbox_mAP' and summary['seeds'] == [0, 1]
    kernel, pytorch = summary['rows']
    assert kernel['variant'] == 'kernel' and pytorch['variant'] == 'pytorch'
    assert all(0.0 <= v <= 1.0 for v in kernel['values'] + pytorch['values'])
    if not torch.cuda.is_available():  # the kernel never runs: both variants compute the same, seed by seed
        assert kernel['values'] == pytorch['values'] and pytorch['gap_mean'] == 0.0
        assert 'pytorch vs kernel within 0.02: shown' in proc.stdout

    logs = {p: p.stat().st_size for p in (run['cwd'] / 'sweep').glob('*/seed*/train.log')}
    again = run_sweep_tool(*args, cwd=run['cwd'])
    assert again.returncode == 0 and again.stdout == proc.stdout
    assert {p: p.stat().st_size for p in logs} == logs  # finished runs are read back, not trained again

    other = run_sweep_tool(*args, '--metric', 'accuracy/top1', cwd=run['cwd'])
    assert other.returncode == 2 and '4 of 4 runs failed' in other.stderr and 'Traceback' not in other.stderr
    assert "kernel seed 0: " in other.stderr and "logged no 'accuracy/top1'" in other.stderr

    longer = run_sweep_tool(*args, 'train_cfg.max_epochs=2', cwd=run['cwd'])
    assert longer.returncode == 2 and 'holds runs of other arguments' in longer.stderr
    assert 'pytorch/seed1: ' in longer.stderr and 'Traceback' not in longer.stderr
    assert {p: p.stat().st_size for p in logs} == logs  # neither trained anything
