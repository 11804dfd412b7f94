"""Issue 11's GPU checks in one short lease of a GPU machine: tests, benchmarks and the seed sweep, in two calls.

Here, where a package registry is (once; .device/ is ignored by git):

    .venv/bin/python tools/gpu_check.py prepare            # .device/wheels: mmengine, mmdet, ... and mmcv's sources

There (the device tool's run, carry [".device/wheels"], timeout_s 600), the same command once or twice:

    python3 tools/gpu_check.py run --out "$OUT"            # [--deadline 540] [--seeds 4] [--jobs 8] [--epochs 12]

Exit status 0: every step done; 3: the deadline cut the run short, run it again (within the machine's warm time)
to continue; 1: a step failed (gpu_check.md shows the end of its log; --retry runs failed steps again). The steps
and what they measure: mmvanilla/gpu_check.py. Only the standard library is needed before the install step.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    """mmvanilla/gpu_check.py by its path: importing the package would need the packages the run installs."""
    spec = importlib.util.spec_from_file_location('mmvanilla_gpu_check', ROOT / 'mmvanilla' / 'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    prepare = sub.add_parser('prepare', help='download what the GPU machine lacks (needs a package registry)')
    prepare.add_argument('--python-version', default='3.12', help="the GPU machine's Python")
    run = sub.add_parser('run', help='run the checks (on the GPU machine)')
    run.add_argument('--out', required=True, help='where the results go ($OUT on the GPU machine)')
    run.add_argument('--state', default='/tmp/mmvanilla_gpu_check', help='what the run keeps between calls')
    run.add_argument('--deadline', type=float, default=540, help='seconds; a step still running then is stopped')
    run.add_argument('--seeds', type=int, default=4, help='seeds of the sweep (kernel on and off each)')
    run.add_argument('--jobs', type=int, default=8, help='sweep runs at a time')
    run.add_argument('--epochs', type=int, default=12, help='epochs of each sweep run')
    run.add_argument('--retry', action='store_true', help='run failed steps again')
    run.add_argument('--quick', action='store_true', help='this machine, tiny settings, a minute: a smoke test')
    args = parser.parse_args()
    gpu_check = load_gpu_check()
    try:
        if args.command == 'prepare':
            files = gpu_check.prepare_wheels(python_version=args.python_version)
            print('\n'.join(f'{f.stat().st_size / 2**20:7.2f} MB  {f.relative_to(ROOT)}' for f in files))
            print('carry [".device/wheels"] to the GPU machine and run: python3 tools/gpu_check.py run --out "$OUT"')
            return 0
        rc = gpu_check.run_checks(Path(args.state), Path(args.out), args.deadline, quick=args.quick,
                                  retry=args.retry, seeds=args.seeds, jobs=args.jobs, epochs=args.epochs)
    except (FileNotFoundError, RuntimeError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print((Path(args.out) / 'gpu_check.md').read_text())
    return rc


if __name__ == '__main__':
    sys.exit(main())
