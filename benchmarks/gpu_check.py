"""Checks a GPU node that has no internet access: kernel and model tests, benchmarks and the seed sweep, from a
wheelhouse prepared on a connected machine, resumable under a job time limit.

On a machine with a package registry (once; .device/ is ignored by git):

    .venv/bin/python benchmarks/gpu_check.py prepare      # .device/wheels: mmengine, mmdet, ... and mmcv's sources

On the GPU node (copy the checkout with .device/wheels there), once, or again after a time limit cut it short:

    python3 benchmarks/gpu_check.py run --out OUT         # [--deadline 540] [--seeds 4] [--jobs 8] [--epochs 12]

Exit status 0: every step done; 3: the deadline cut the run short, run it again (with the same ``--state``) to
continue; 1: a step failed (gpu_check.md shows the end of its log; --retry runs failed steps again).

A GPU node's image often has Python, torch, Triton and timm but neither a package registry nor mmengine, mmdet or
mmcv, and mmcv's CUDA ops take minutes to build (about 6 on 16 cores). So every check runs in one fixed order, each
step once, under a deadline (a batch job's time limit):

- :func:`prepare_wheels` (where a package registry is): what the node lacks, as wheels for its Python, and mmcv's
  sources, in ``.device/wheels`` (an ignored folder, to carry);
- :func:`run_checks` (on the node): :func:`plan` lists the steps. mmcv builds in the background while the kernels are
  tested and timed; the detector steps wait for it. A step still running at the deadline is stopped with its whole
  process group and the run ends; running again continues where it stopped (finished steps are skipped, the seed
  sweep resumes its runs), as long as its ``state`` folder is still there.

After every step the results are copied to ``out``: ``gpu_check.md`` (each step's status and time, the benchmark
and sweep tables), ``gpu_check.log`` (every step's output), the benchmarks' ``.md``/``.json`` and ``sweep.json``.
``quick=True`` runs the same steps on this machine in about a minute (tiny settings, the CPU, no install and no
build): the tests use it.

Only the standard library is imported here: the run starts before the packages it installs exist. It runs from a
checkout of the repository (it runs the tests, the tools and the configs there).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ['DEVICE_PACKAGES', 'KERNEL_TESTS', 'MODEL_TESTS', 'Step', 'plan', 'prepare_wheels', 'run_checks',
           'run_steps']

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / '.device' / 'wheels'
#: What a GPU node's image often lacks for the checks (it has torch, Triton, timm, numpy, scipy, opencv, pytest ...),
#: pinned to the versions of the environment that prepares them. mmcv travels as sources: no wheel fits its torch.
DEVICE_PACKAGES = ('mmengine', 'mmdet', 'pycocotools', 'addict', 'yapf', 'termcolor', 'terminaltables', 'shapely',
                   'platformdirs', 'setuptools')
MMCV = 'mmcv'
DETECTOR = 'configs/retinanet_vanillanet_tiny_synthetic.py'
# The tests that run the kernels, and the layers and backbone that call them, on a GPU (the rest of the suite runs
# in CI). The kernels' need no mmcv ops; the models' do (in mmdet's scope, building a norm layer imports mmdet.models).
KERNEL_TESTS = ('tests/ops/test_depthwise.py', 'tests/ops/test_pooling.py')
KERNEL_COMPILATION = 'tests/ops/kernel_compilation.py'  # with no target named: every target the kernels are for
MODEL_TESTS = ('tests/models/test_layers.py', 'tests/models/test_vanillanet.py')
DONE, FAILED, CUT = 'done', 'failed', 'cut short'


@dataclass
class Step:
    """One check: a command (run in ``cwd``, its output to the step's log) or a function ``(seconds_left, log)``
    returning an exit code; ``needs`` names the steps that must be done first."""

    name: str
    what: str
    command: Sequence[str] | Callable[[float, Path], int]
    needs: Sequence[str] = ()
    cwd: Path = ROOT
    outputs: dict[str, Path] = field(default_factory=dict)  # a result file -> its name in ``out``


class _Deadline(Exception):
    pass


def prepare_wheels(dest: Path = WHEELS, python_version: str = '3.12') -> list[Path]:
    """Downloads :data:`DEVICE_PACKAGES` as x86-64 Linux wheels for ``python_version`` (the GPU node's; pinned
    to this environment's versions) and mmcv's sources into ``dest``; returns the files."""
    from importlib.metadata import version
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, '-m', 'pip', 'download', '--quiet', '--disable-pip-version-check', '--no-deps',
           '-d', str(dest)]
    platforms = [arg for tag in ('manylinux_2_28', 'manylinux_2_27', 'manylinux_2_17', 'manylinux2014')
                 for arg in ('--platform', f'{tag}_x86_64')]
    subprocess.run([*pip, '--only-binary=:all:', '--python-version', python_version, '--implementation', 'cp',
                    *platforms, *(f'{name}=={version(name)}' for name in DEVICE_PACKAGES)], check=True)
    # The sdist's metadata step imports torch: without build isolation it finds this environment's.
    subprocess.run([*pip, '--no-binary=:all:', '--no-build-isolation', f'{MMCV}=={version(MMCV)}'], check=True)
    return sorted(dest.iterdir())


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _tool(name: str, *args: str) -> list[str]:
    return _python(str(ROOT / 'tools' / name), *args)


def _environment_command() -> list[str]:
    code = ('import platform, torch, triton; print(f"python {platform.python_version()}, torch {torch.__version__} '
            '(CUDA {torch.version.cuda}), triton {triton.__version__}, GPU: " + (torch.cuda.get_device_name() if '
            'torch.cuda.is_available() else "none"))')
    return _python('-c', code)


def plan(state: Path, quick: bool = False, wheels: Path = WHEELS, seeds: int = 4, jobs: int = 8,
         epochs: int = 12) -> list[Step]:
    """The steps of a run, in order. ``quick``: the CPU, tiny settings, no install and no build (this environment
    has the packages), for the tests. ``seeds``, ``jobs`` and ``epochs`` size the seed sweep."""
    site = state / 'site'
    bench = ['--skip-inference', '--skip-train-step', '--device', 'cuda']
    if quick:
        bench = ['--quick', '--device', 'cpu', '--skip-memory', '--skip-onnx', '--repeats', '1']
    data = ['--num-train', '16', '--num-val', '8'] if quick else []
    kernel_tests = ([KERNEL_TESTS[0], '-k', 'fp32_for_every_odd_kernel and 3'] if quick else list(KERNEL_TESTS))
    model_tests = ([MODEL_TESTS[0], '-k', 'fast_path_computes_the_same'] if quick else list(MODEL_TESTS))
    pytest = _python('-m', 'pytest', '-q', '-p', 'no:cacheprovider')
    sweep_seeds = [str(s) for s in range(1 if quick else seeds)]
    sweep_epochs = 1 if quick else epochs
    needs_install, needs_mmcv = ([], []) if quick else (['install'], ['mmcv'])
    steps = [Step('environment', 'python, torch, Triton and the GPU', _environment_command())]
    if not quick:
        steps += [
            Step('install', f'the carried wheels into {site}',
                 _python('-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-index', '--no-deps',
                         '--no-compile', '--target', str(site), *map(str, sorted(wheels.glob('*.whl'))))),
            Step('mmcv-build', "mmcv's CUDA ops, built in the background", _start_mmcv_build(state, wheels),
                 needs=needs_install)]
    steps += [
        Step('data', 'the synthetic COCO set of the seed sweep',
             _tool('make_synthetic_data.py', 'coco', '--out', str(state / 'data/synthetic_coco'), *data),
             needs=needs_install),
        Step('tests-kernels', 'the kernel tests, on the GPU', [*pytest, *kernel_tests], needs=needs_install)]
    if not quick:  # the tests compile for the first target only; here every target the kernels are for
        steps.append(Step('compile-kernels', 'every kernel compiled for every target (sm_90, sm_80)',
                          _python(str(ROOT / KERNEL_COMPILATION)), needs=needs_install))
    steps += [
        Step('bench-kernels', 'depthwise convolution and classifier training steps',
             _tool('benchmark.py', *bench, '--training-parts', 'depthwise', 'classifier', '--out-dir',
                   str(state / 'bench_kernels')), needs=needs_install,
             outputs={state / 'bench_kernels/benchmark.md': 'bench_kernels.md',
                      state / 'bench_kernels/benchmark.json': 'bench_kernels.json'})]
    if not quick:
        steps.append(Step('mmcv', 'waits for the build, installs it, runs nms and RoIAlign on the GPU',
                          _finish_mmcv_build(state, site), needs=['mmcv-build']))
    steps += [
        Step('tests-models', 'the layer and backbone tests, on the GPU', [*pytest, *model_tests], needs=needs_mmcv),
        Step('bench-detection', 'backbone and RetinaNet training steps, kernel on/off, with_cp on/off',
             _tool('benchmark.py', *bench, '--training-parts', 'backbone', 'detector', '--out-dir',
                   str(state / 'bench_detection')), needs=needs_mmcv,
             outputs={state / 'bench_detection/benchmark.md': 'bench_detection.md',
                      state / 'bench_detection/benchmark.json': 'bench_detection.json'}),
        Step('sweep', f'the tiny RetinaNet, kernel on and off, {len(sweep_seeds)} seeds, {sweep_epochs} epochs',
             _python(str(ROOT / 'benchmarks' / 'seed_sweep.py'), str(ROOT / DETECTOR), '--seeds', *sweep_seeds,
                     '--jobs', str(jobs), '--within', '0.02', '--work-dir', str(state / 'sweep'), '--cfg-options',
                     f'train_cfg.max_epochs={sweep_epochs}', f'train_cfg.val_interval={sweep_epochs}',
                     f'custom_hooks.0.decay_epochs={max(sweep_epochs // 2, 1)}',
                     'default_hooks.checkpoint.interval=1',  # each epoch kept: a run cut short resumes from it
                     # an untrained model scores under the threshold: keep every box, so that mAP is computed
                     *(['train_dataloader.batch_size=4', 'model.test_cfg.score_thr=0.0'] if quick else [])),
             cwd=state, needs=['data', *needs_mmcv], outputs={state / 'sweep/summary.json': 'sweep.json'})]
    return steps


def _start_mmcv_build(state: Path, wheels: Path) -> Callable[[float, Path], int]:
    """Unpacks mmcv's sources, switches them to C++20 (torch >= 2.10's headers need it) and starts the build in its
    own process group, which outlives this run; ``state/mmcv.rc`` gets its exit code."""

    def start(left: float, log: Path) -> int:
        sources = sorted(wheels.glob(f'{MMCV}-*.tar.gz'))
        if not sources:
            raise FileNotFoundError(f'no {MMCV} sources in {wheels}: run `python benchmarks/gpu_check.py prepare` '
                                    'where a package registry is, and carry .device/wheels')
        build, rc_file = state / 'mmcv', state / 'mmcv.rc'
        shutil.rmtree(build, ignore_errors=True)
        rc_file.unlink(missing_ok=True)  # an earlier build's exit code must not answer for this one
        with tarfile.open(sources[-1]) as tar:
            tar.extractall(build, filter='data')
        src = next(build.glob(f'{MMCV}-*'))
        setup = src / 'setup.py'
        if 'c++17' not in setup.read_text():
            raise RuntimeError(f"{setup} no longer asks for c++17: check the C++20 switch in {__file__}")
        setup.write_text(setup.read_text().replace('c++17', 'c++20'))
        jobs = max(1, (os.cpu_count() or 4) - 4)  # cores left for the steps that run meanwhile
        command = (f'{sys.executable} -m pip wheel --no-deps --no-build-isolation -w {build / "dist"} . '
                   f'>> {log} 2>&1; echo $? > {rc_file}')
        env = dict(os.environ, MMCV_WITH_OPS='1', FORCE_CUDA='1', MAX_JOBS=str(jobs),
                   TORCH_CUDA_ARCH_LIST=os.environ.get('TORCH_CUDA_ARCH_LIST', '9.0'))
        subprocess.Popen(['bash', '-c', command], cwd=src, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return 0
    return start


def _finish_mmcv_build(state: Path, site: Path) -> Callable[[float, Path], int]:
    def finish(left: float, log: Path) -> int:
        rc_file, start = state / 'mmcv.rc', time.monotonic()
        while not rc_file.exists():
            if time.monotonic() - start > left:
                raise _Deadline
            time.sleep(2)
        rc = int(rc_file.read_text().strip() or 1)
        if rc != 0:
            return rc  # the build's output is in the mmcv-build step's log
        with open(log, 'a') as out:
            for command in (_python('-m', 'pip', 'install', '--quiet', '--no-index', '--no-deps', '--target',
                                    str(site), *map(str, (state / 'mmcv/dist').glob('*.whl'))),
                            _tool('mmcv_ops.py', 'verify', 'cuda')):
                rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
                if rc != 0:
                    return rc
        return 0
    return finish


def _run_command(command: Sequence[str], cwd: Path, log: Path, left: float) -> int:
    """Runs ``command`` in a new process group; past ``left`` seconds the whole group (the sweep's training runs
    too) is stopped and :class:`_Deadline` raised."""
    with open(log, 'a') as out:
        proc = subprocess.Popen(list(command), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            raise _Deadline


def run_steps(steps: Sequence[Step], state: Path, out: Path, deadline_s: float, retry: bool = False) -> int:
    """Runs each step not yet done, in order, until ``deadline_s`` seconds have passed.

    A failed step is not run again unless ``retry``; a step whose ``needs`` are not done is left for a later run.

    Returns:
        int: 0 when every step is done, 3 when the deadline cut the run short (run again to continue), else 1.
    """
    start = time.monotonic()
    state.mkdir(parents=True, exist_ok=True)
    (state / 'logs').mkdir(exist_ok=True)
    status_file = state / 'status.json'
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    cut = False
    for step in steps:
        done = status.get(step.name, {}).get('status')
        if done == DONE or (done == FAILED and not retry):
            continue
        if any(status.get(need, {}).get('status') != DONE for need in step.needs):
            continue
        log = state / 'logs' / f'{step.name}.log'
        began = time.monotonic()
        left = deadline_s - (began - start)
        try:
            if left <= 0:
                raise _Deadline
            if callable(step.command):
                rc = step.command(left, log)
            else:
                rc = _run_command(step.command, step.cwd, log, left)
            result = DONE if rc == 0 else FAILED
        except _Deadline:
            result, cut = CUT, True
        except Exception as error:  # noqa: BLE001  (a step's own error is its result, and the run goes on)
            with open(log, 'a') as f:
                f.write(f'{type(error).__name__}: {error}\n')
            result = FAILED
        status[step.name] = dict(status=result, seconds=round(time.monotonic() - began, 1),
                                 ran=status.get(step.name, {}).get('ran', 0) + 1)
        status_file.write_text(json.dumps(status, indent=2))
        _collect(steps, status, state, out)
        if cut:
            break
    _collect(steps, status, state, out)
    if cut:
        return 3
    return 0 if all(status.get(s.name, {}).get('status') == DONE for s in steps) else 1


def _tail(path: Path, lines: int) -> str:
    return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:]) if path.exists() else ''


def _report(steps: Sequence[Step], status: dict, state: Path) -> str:
    logs = state / 'logs'
    text = ['# GPU checks (benchmarks/gpu_check.py)', '', _tail(logs / 'environment.log', 1), '',
            '| step | what | status | seconds | runs |', '|---|---|---|--:|--:|']
    for step in steps:
        record = status.get(step.name)
        if record is None:
            waiting = [n for n in step.needs if status.get(n, {}).get('status') != DONE]
            record = dict(status=f'waits for {", ".join(waiting)}' if waiting else 'not run', seconds='', ran=0)
        text.append(f'| {step.name} | {step.what} | {record["status"]} | {record["seconds"]} | {record["ran"]} |')
    for step in steps:
        if status.get(step.name, {}).get('status') == FAILED:
            text += ['', f'## {step.name} failed: the end of its log', '', '```', _tail(logs / f'{step.name}.log', 25),
                     '```']
    for step in steps:
        tables = [path for path, name in step.outputs.items() if name.endswith('.md') and path.exists()]
        if status.get(step.name, {}).get('status') == DONE and (tables or step.name == 'sweep'):
            body = tables[0].read_text() if tables else _tail(logs / f'{step.name}.log', 20)
            text += ['', f'## {step.name}', '', body.strip()]
    return '\n'.join(text) + '\n'


def _collect(steps: Sequence[Step], status: dict, state: Path, out: Path) -> None:
    """The results so far into ``out``: the report, every step's log (the last 2 MB of each) and its outputs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / 'gpu_check.md').write_text(_report(steps, status, state))
    with open(out / 'gpu_check.log', 'w') as log:
        for step in steps:
            path = state / 'logs' / f'{step.name}.log'
            if path.exists():
                log.write(f'===== {step.name} =====\n{path.read_bytes()[-2**21:].decode(errors="replace")}\n')
    for step in steps:
        for path, name in step.outputs.items():
            if path.exists():
                shutil.copyfile(path, out / name)


def run_checks(state: Path, out: Path, deadline_s: float, quick: bool = False, retry: bool = False,
               wheels: Path = WHEELS, **sizes) -> int:
    """Runs :func:`plan`'s steps (see :func:`run_steps`); every step sees the installed packages and the repository
    on ``PYTHONPATH``. ``sizes``: the seed sweep's ``seeds``, ``jobs`` and ``epochs``."""
    if not quick and not sorted(wheels.glob('*.whl')):
        raise FileNotFoundError(f'no wheels in {wheels}: run `python benchmarks/gpu_check.py prepare` where a '
                                'package registry is, and carry .device/wheels to the GPU node')
    state = state.resolve()
    paths = [str(state / 'site'), str(ROOT), *filter(None, os.environ.get('PYTHONPATH', '').split(os.pathsep))]
    os.environ.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED='1')
    return run_steps(plan(state, quick, wheels, **sizes), state, out, deadline_s, retry)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    prepare = sub.add_parser('prepare', help='download what the GPU node lacks (needs a package registry)')
    prepare.add_argument('--python-version', default='3.12', help="the GPU node's Python")
    run = sub.add_parser('run', help='run the checks (on the GPU node)')
    run.add_argument('--out', required=True, help='where the results go')
    run.add_argument('--state', default='/tmp/mmvanilla_gpu_check', help='what the run keeps between calls')
    run.add_argument('--deadline', type=float, default=540, help='seconds; a step still running then is stopped')
    run.add_argument('--seeds', type=int, default=4, help='seeds of the sweep (kernel on and off each)')
    run.add_argument('--jobs', type=int, default=8, help='sweep runs at a time')
    run.add_argument('--epochs', type=int, default=12, help='epochs of each sweep run')
    run.add_argument('--retry', action='store_true', help='run failed steps again')
    run.add_argument('--quick', action='store_true', help='this machine, tiny settings, a minute: a smoke test')
    args = parser.parse_args()
    try:
        if args.command == 'prepare':
            files = prepare_wheels(python_version=args.python_version)
            print('\n'.join(f'{f.stat().st_size / 2**20:7.2f} MB  {f.relative_to(ROOT)}' for f in files))
            print('copy the checkout with .device/wheels to the GPU node and run there: '
                  'python3 benchmarks/gpu_check.py run --out OUT')
            return 0
        rc = run_checks(Path(args.state), Path(args.out), args.deadline, quick=args.quick, retry=args.retry,
                        seeds=args.seeds, jobs=args.jobs, epochs=args.epochs)
    except (FileNotFoundError, RuntimeError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print((Path(args.out) / 'gpu_check.md').read_text())
    return rc


if __name__ == '__main__':
    sys.exit(main())
