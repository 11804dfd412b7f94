"""benchmarks/gpu_check.py: the GPU checks run in order, once each, under a deadline, and resume where they stopped.

The runner is tested with small commands; the mmcv build with a stand-in source package; the whole plan in its quick
form on this machine's CPU. What it measures on a GPU is the benchmark's and the sweep's, tested in their own files.
"""
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import Step, plan, run_steps
from mmvanilla.benchmark import TrainingSettings

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run_gpu_check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs ``benchmarks/gpu_check.py`` as a user would, from ``cwd``."""
    return subprocess.run([sys.executable, str(ROOT / 'benchmarks/gpu_check.py'), *args], cwd=cwd,
                          env=dict(os.environ, PYTHONUNBUFFERED='1'), capture_output=True, text=True, timeout=600)


def py(code: str) -> list[str]:
    return [sys.executable, '-c', code]


def alive(pid: int) -> bool:
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def status(state: Path) -> dict:
    return json.loads((state / 'status.json').read_text())


def test_steps_run_in_order_once_and_a_second_run_skips_the_finished_ones(tmp_path):
    steps = [Step('first', 'writes a', py("open('a', 'w').write('a')"), cwd=tmp_path),
             Step('second', 'appends b', py("open('a', 'a').write('b')"), needs=['first'], cwd=tmp_path)]
    state, out = tmp_path / 'state', tmp_path / 'out'
    assert run_steps(steps, state, out, deadline_s=60) == 0
    assert run_steps(steps, state, out, deadline_s=60) == 0
    assert (tmp_path / 'a').read_text() == 'ab'
    assert [status(state)[name]['ran'] for name in ('first', 'second')] == [1, 1]
    report = (out / 'gpu_check.md').read_text()
    assert '| first | writes a | done |' in report and '| second | appends b | done |' in report


def test_a_failed_step_shows_its_log_and_what_needs_it_waits_while_the_rest_runs(tmp_path):
    steps = [Step('build', 'fails', py("print('compiler says no'); raise SystemExit(3)")),
             Step('use', 'needs the build', py('pass'), needs=['build']),
             Step('other', 'independent', py('pass'))]
    state, out = tmp_path / 'state', tmp_path / 'out'
    assert run_steps(steps, state, out, deadline_s=60) == 1
    report = (out / 'gpu_check.md').read_text()
    assert '| build | fails | failed |' in report and 'compiler says no' in report
    assert '| use | needs the build | waits for build |' in report and '| other | independent | done |' in report
    assert 'compiler says no' in (out / 'gpu_check.log').read_text()

    run_steps(steps, state, out, deadline_s=60)
    assert status(state)['build']['ran'] == 1  # a failure is not repeated by itself
    run_steps(steps, state, out, deadline_s=60, retry=True)
    assert status(state)['build']['ran'] == 2


def test_the_deadline_stops_a_step_with_its_children_and_the_next_run_continues(tmp_path):
    # The step starts a child (as the sweep starts training runs), then naps as long as the file "nap" says.
    code = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(120)']); open('child', 'w').write(str(child.pid)); time.sleep(float(open('nap').read()))")
    steps = [Step('slow', 'naps', py(code), cwd=tmp_path), Step('after', 'then', py('pass'), cwd=tmp_path)]
    state, out = tmp_path / 'state', tmp_path / 'out'
    (tmp_path / 'nap').write_text('120')
    start = time.monotonic()
    assert run_steps(steps, state, out, deadline_s=3) == 3
    assert time.monotonic() - start < 30
    assert status(state)['slow']['status'] == 'cut short' and 'after' not in status(state)
    child = int((tmp_path / 'child').read_text())
    for _ in range(50):  # a killed process may linger a moment (as a zombie where nothing reaps it at once)
        if not alive(child):
            break
        time.sleep(0.1)
    assert not alive(child)

    (tmp_path / 'nap').write_text('0')
    assert run_steps(steps, state, out, deadline_s=60) == 0
    assert status(state)['slow'] == dict(status='done', seconds=status(state)['slow']['seconds'], ran=2)


def test_results_are_copied_to_out_and_tables_put_in_the_report(tmp_path):
    steps = [Step('bench', 'a table', py("open('t.md', 'w').write('| a | b |'); open('t.json', 'w').write('{}')"),
                  cwd=tmp_path, outputs={tmp_path / 't.md': 'bench.md', tmp_path / 't.json': 'bench.json'})]
    out = tmp_path / 'out'
    run_steps(steps, tmp_path / 'state', out, deadline_s=60)
    assert sorted(p.name for p in out.iterdir()) == ['bench.json', 'bench.md', 'gpu_check.log', 'gpu_check.md']
    assert '## bench\n\n| a | b |' in (out / 'gpu_check.md').read_text()


def test_the_plan_tests_and_times_the_kernels_while_mmcv_builds_then_the_detectors(tmp_path):
    steps = plan(tmp_path, wheels=tmp_path)
    assert [s.name for s in steps] == ['environment', 'install', 'mmcv-build', 'data', 'tests-kernels',
                                       'compile-kernels', 'bench-kernels', 'mmcv', 'tests-models', 'bench-detection',
                                       'sweep']
    by_name = {s.name: s for s in steps}
    assert all('mmcv' in by_name[name].needs for name in ('tests-models', 'bench-detection', 'sweep'))
    assert not {'mmcv', 'mmcv-build'} & {n for s in ('tests-kernels', 'compile-kernels', 'bench-kernels')
                                          for n in by_name[s].needs}
    assert by_name['compile-kernels'].command[-1] == str(ROOT / 'tests/ops/kernel_compilation.py')  # every target
    for step in steps:  # every tool and test file it names exists
        if not callable(step.command):
            assert all(Path(a).exists() for a in step.command if a.endswith('.py') and '/' in a), step.command
    parts = [a for name in ('bench-kernels', 'bench-detection') for a in by_name[name].command
             if a in TrainingSettings().parts]
    assert sorted(parts) == sorted(TrainingSettings().parts)
    sweep = by_name['sweep'].command
    assert sweep[sweep.index('--seeds') + 1:sweep.index('--jobs')] == ['0', '1', '2', '3']
    assert 'train_cfg.max_epochs=12' in sweep and 'custom_hooks.0.decay_epochs=6' in sweep


def _source_package(path: Path, setup: str) -> Path:
    """A stand-in for mmcv's sources: a package that builds in seconds."""
    src = path / 'src/mmcv-2.1.0'
    src.mkdir(parents=True)
    (src / 'setup.py').write_text(setup)
    with tarfile.open(path / 'mmcv-2.1.0.tar.gz', 'w:gz') as tar:
        tar.add(src, arcname='mmcv-2.1.0')
    return path


def test_mmcv_builds_in_the_background_in_cpp20_then_installs_and_runs_its_ops(tmp_path):
    wheels = _source_package(tmp_path / 'wheels', "from setuptools import setup\n"
                             "flag = '-std=c++17'  # as in mmcv 2.1.0, whose build with today's torch needs c++20\n"
                             "assert flag.endswith('20'), flag\n"
                             "setup(name='mmcv', version='2.1.0', py_modules=[])\n")
    state = tmp_path / 'state'
    state.mkdir()
    (state / 'mmcv.rc').write_text('1\n')  # a failed earlier build in the same state: not this build's result
    by_name = {s.name: s for s in plan(state, wheels=wheels)}
    steps = [by_name['mmcv-build'], by_name['mmcv']]
    steps[0].needs = []
    rc = run_steps(steps, state, tmp_path / 'out', deadline_s=240)
    assert rc == 0, (tmp_path / 'out/gpu_check.log').read_text()[-3000:]
    assert list((state / 'site').glob('mmcv-2.1.0.dist-info'))  # installed where the steps' PYTHONPATH looks
    assert 'nms + RoIAlign run on the CPU' in (state / 'logs/mmcv.log').read_text()


def test_mmcv_sources_that_no_longer_ask_for_cpp17_are_a_failed_step_that_says_so(tmp_path):
    wheels = _source_package(tmp_path / 'wheels', 'from setuptools import setup\nsetup()\n')
    state = tmp_path / 'state'
    step = next(s for s in plan(state, wheels=wheels) if s.name == 'mmcv-build')
    step.needs = []
    assert run_steps([step], state, tmp_path / 'out', deadline_s=60) == 1
    assert 'no longer asks for c++17' in (tmp_path / 'out/gpu_check.md').read_text()


def test_a_run_without_the_prepared_wheels_says_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match='benchmarks/gpu_check.py prepare'):
        gpu_check.run_checks(tmp_path / 'state', tmp_path / 'out', 60, wheels=tmp_path)


def test_the_quick_run_goes_through_every_step_on_this_machine(tmp_path):
    proc = run_gpu_check('run', '--quick', '--out', 'out', '--state', 'state', '--jobs', '2',
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / 'out/gpu_check.md').read_text()
    assert report in proc.stdout
    names = ['environment', 'data', 'tests-kernels', 'bench-kernels', 'tests-models', 'bench-detection', 'sweep']
    assert all(f'| {name} |' in report for name in names)
    assert report.count(' | done | ') == len(names) and 'GPU: none' in report
    assert '# VanillaNet speed benchmark' in report and '| Variant | seed 0 |' in report
    summary = json.loads((tmp_path / 'out/sweep.json').read_text())
    assert [row['variant'] for row in summary['rows']] == ['kernel', 'pytorch']
    assert (tmp_path / 'state/data/synthetic_coco/annotations').is_dir()  # what it makes stays in --state

    again = run_gpu_check('run', '--quick', '--out', 'out2', '--state', 'state', cwd=tmp_path)
    assert again.returncode == 0 and json.loads((tmp_path / 'state/status.json').read_text())['sweep']['ran'] == 1


def test_the_tool_runs_before_mmvanilla_can_be_imported(tmp_path):
    # On a GPU node without them, mmengine and mmdet exist only after the install step: the tool must start without them.
    blocker = tmp_path / 'sitecustomize.py'
    blocker.write_text('import sys\nsys.modules["mmengine"] = None\nsys.modules["mmvanilla"] = None\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks/gpu_check.py'), 'run', '--out', 'out', '--state',
                           'state', '--deadline', '1'], cwd=tmp_path, env=env, capture_output=True, text=True)
    # It gets as far as looking for the wheels (none in a fresh clone), which needs no package.
    assert proc.returncode in (0, 1, 2, 3), proc.stderr
    assert 'ModuleNotFoundError' not in proc.stderr and 'ImportError' not in proc.stderr


def test_what_runs_while_mmcv_builds_needs_none_of_its_compiled_ops(tmp_path):
    # On the node the kernel tests and benchmark run before mmcv's ops exist: mmcv's Python files only, no mmcv._ext.
    (tmp_path / 'sitecustomize.py').write_text('import sys\nsys.modules["mmcv._ext"] = None\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    tests = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider',
                            *gpu_check.KERNEL_TESTS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert tests.returncode == 0 and ' passed' in tests.stdout, tests.stdout[-3000:]
    code = ('from mmvanilla.benchmark import BenchmarkSettings, quick_training_settings, run_benchmark\n'
            "result = run_benchmark(BenchmarkSettings(inference=False, train_step=False, training=True, \n"
            "    training_settings=quick_training_settings(parts=('depthwise', 'classifier'))))['training']\n"
            "print('measured', sorted(k for k in ('depthwise', 'classifier') if result[k]))\n"
            'try:\n    import mmcv.ops\nexcept ImportError as error:\n    print(error)\n')
    bench = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "measured ['classifier', 'depthwise']" in bench.stdout
    assert 'import of mmcv._ext halted' in bench.stdout  # the stand-in for the node holds
