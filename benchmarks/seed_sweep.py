"""One config trained over several seeds in a few variants, in parallel processes, and a final metric compared.

    python benchmarks/seed_sweep.py configs/retinanet_vanillanet_tiny_synthetic.py --seeds 0 1 2 3 --jobs 8 \\
        --within 0.02 [--work-dir work_dirs/seed_sweep] [--metric coco/bbox_mAP] [--cfg-options KEY=VALUE ...]

By default the variants are the series activation's Triton kernel on and off (``model.backbone.fast_dwconv``): does
the tiny synthetic RetinaNet reach the same box mAP either way, within 0.02? One run of each says little there, as
runs that differ only in their seed spread by more than that. So every variant trains with the same seeds, and the
gap is taken seed by seed (paired: both runs of a seed share their initial weights and data order) with a 95%
confidence interval of its mean. Other variants: ``--variant NAME KEY=VALUE ...`` (repeat it; at least two).

Each run is ``tools/train.py CONFIG --work-dir WORK/<variant>/seed<S> --resume --cfg-options randomness.seed=S
<the variant's options> <the common options>``, its output in ``train.log`` there. A finished run leaves a file
``finished`` and is not trained again (its metric is read from its logs), and an unfinished one resumes from its last
checkpoint, so a sweep cut short (a time limit) goes on where it stopped when run again. Each run's arguments are
kept in ``command.json``: a work dir that holds runs of other arguments is refused before anything trains, so no
figure mixes two settings. Runs from a checkout of the repository (it trains through ``tools/train.py``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import t as student_t  # scipy comes with mmdet

from mmvanilla.runner import clear_errors

__all__ = ['SweepRun', 'format_sweep_markdown', 'last_logged_value', 'plan_sweep', 'run_sweep', 'summarize_sweep',
           'variants_from_args']

ROOT = Path(__file__).resolve().parents[1]

#: The default variants: the series activation's kernel on and off.
KERNEL_ON_OFF = {'kernel': ['model.backbone.fast_dwconv=True'], 'pytorch': ['model.backbone.fast_dwconv=False']}


@dataclass(frozen=True)
class SweepRun:
    variant: str
    seed: int
    work_dir: Path
    command: tuple[str, ...]

    @property
    def finished_file(self) -> Path:
        return self.work_dir / 'finished'

    @property
    def log_file(self) -> Path:
        return self.work_dir / 'train.log'

    @property
    def arguments(self) -> list[str]:
        """What the run trains (the command less the interpreter and the tool), as kept in ``command.json``."""
        return list(self.command[2:])


def variants_from_args(groups: list[list[str]] | None) -> dict[str, list[str]]:
    """The variants of ``--variant NAME KEY=VALUE ... --variant ...`` (None: :data:`KERNEL_ON_OFF`)."""
    if not groups:
        return KERNEL_ON_OFF
    names = [group[0] for group in groups]
    if len(set(names)) != len(names):
        raise ValueError(f'--variant names must differ, got {names}')
    return {group[0]: group[1:] for group in groups}


def plan_sweep(config: str, seeds: list[int], variants: dict[str, list[str]], work_dir: str | Path,
               cfg_options: list[str] = ()) -> list[SweepRun]:
    """The runs of a sweep: every variant with every seed. ``variants`` maps a name to its ``--cfg-options``."""
    if not Path(config).is_file():
        raise FileNotFoundError(f'config {config} not found (give its path, e.g. '
                                'configs/retinanet_vanillanet_tiny_synthetic.py)')
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f'seeds must be distinct and at least one, got {seeds}')
    if len(variants) < 2:
        raise ValueError(f'a sweep compares at least two variants, got {list(variants)}')
    runs = []
    for name, options in variants.items():
        for seed in seeds:
            run_dir = Path(work_dir) / name / f'seed{seed}'
            command = (sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(run_dir),
                       '--resume', '--cfg-options', f'randomness.seed={seed}', *options, *cfg_options)
            runs.append(SweepRun(name, seed, run_dir, command))
    return runs


def last_logged_value(work_dir: str | Path, key: str) -> float:
    """The last value of ``key`` that the run in ``work_dir`` logged (its newest ``*/vis_data/scalars.json``).

    Raises:
        RuntimeError: the run logged no such value; the message lists the keys it did log.
    """
    files = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    found, keys = None, set()
    for path in files:  # oldest first (timestamped folders), so a resumed run's last value wins
        for line in path.read_text().splitlines():
            record = json.loads(line)
            keys.update(record)
            if key in record:
                found = float(record[key])
    if found is None:
        logged = ', '.join(sorted(keys)) or 'nothing'
        raise RuntimeError(f'{work_dir}: the run logged no {key!r} (it logged: {logged}); check --metric and that '
                           'the run validates at its end (train_cfg.val_interval)')
    return found


def _run_one(run: SweepRun, metric: str) -> dict:
    if not run.finished_file.exists():  # train (resuming from its last checkpoint, if any)
        with open(run.log_file, 'a') as log:
            code = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, PYTHONUNBUFFERED='1')).returncode
        if code != 0:
            return dict(variant=run.variant, seed=run.seed, error=f'exit code {code}, log: {run.log_file}')
        run.finished_file.touch()
    try:
        return dict(variant=run.variant, seed=run.seed, metric=metric, value=last_logged_value(run.work_dir, metric))
    except RuntimeError as e:
        return dict(variant=run.variant, seed=run.seed, error=str(e))


def _check_same_arguments(runs: list[SweepRun]) -> None:
    clashes = []
    for run in runs:
        kept = run.work_dir / 'command.json'
        if kept.exists() and json.loads(kept.read_text()) != run.arguments:
            clashes.append(f'{run.work_dir}: {" ".join(json.loads(kept.read_text()))}')
    if clashes:
        raise ValueError('the work dir holds runs of other arguments, which this sweep would mix with its own; give '
                         'another --work-dir (or delete those runs):\n  ' + '\n  '.join(clashes))
    for run in runs:
        run.work_dir.mkdir(parents=True, exist_ok=True)
        (run.work_dir / 'command.json').write_text(json.dumps(run.arguments))


def run_sweep(runs: list[SweepRun], metric: str, jobs: int = 1) -> list[dict]:
    """Runs ``runs``, ``jobs`` at a time; a finished run (it leaves a file ``finished``) is read, not trained again.

    Returns:
        list[dict]: Per run ``variant``, ``seed``, ``metric``, ``value``, in the order of ``runs``.

    Raises:
        ValueError: a run's work dir holds a run of other arguments (nothing is trained then).
        RuntimeError: some runs failed; the message names each with its log (the others' results are kept).
    """
    _check_same_arguments(runs)
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        results = list(pool.map(lambda run: _run_one(run, metric), runs))
    failed = [f'{r["variant"]} seed {r["seed"]}: {r["error"]}' for r in results if 'error' in r]
    if failed:
        raise RuntimeError(f'{len(failed)} of {len(runs)} runs failed (finished ones are kept and not rerun):\n  '
                           + '\n  '.join(failed))
    return results


def summarize_sweep(results: list[dict]) -> dict:
    """Per variant the values by seed, their mean and sample standard deviation; and, against the first variant,
    the paired gap (``variant - first``, seed by seed): its mean and the half-width of its 95% confidence interval
    (Student's t; None with a single seed), and ``gap_bound``, the largest absolute gap that interval allows."""
    variants = list(dict.fromkeys(r['variant'] for r in results))
    by_variant = {v: {r['seed']: r['value'] for r in results if r['variant'] == v} for v in variants}
    seeds = sorted(by_variant[variants[0]])
    rows = []
    for v in variants:
        values = [by_variant[v][s] for s in seeds]
        row = dict(variant=v, values=values, mean=statistics.fmean(values),
                   std=statistics.stdev(values) if len(values) > 1 else None)
        if v != variants[0]:
            gaps = [by_variant[v][s] - by_variant[variants[0]][s] for s in seeds]
            row['gap_mean'] = statistics.fmean(gaps)
            row['gap_ci95'] = row['gap_bound'] = None
            if len(gaps) > 1:  # two-sided 95% Student's t interval of the mean gap
                half = float(student_t.ppf(0.975, len(gaps) - 1)) * statistics.stdev(gaps) / math.sqrt(len(gaps))
                # The largest gap the interval allows: "within 0.02" is shown when this is at most 0.02.
                row['gap_ci95'], row['gap_bound'] = half, abs(row['gap_mean']) + half
        rows.append(row)
    return dict(metric=results[0]['metric'], seeds=seeds, rows=rows)


def format_sweep_markdown(summary: dict, within: float | None = None) -> str:
    """A table of :func:`summarize_sweep`: one row per variant, one column per seed; with ``within``, a line per
    variant saying whether its gap is shown to lie within ``+-within`` (its 95% interval inside that)."""
    seeds, first = summary['seeds'], summary['rows'][0]['variant']
    lines = [f'{summary["metric"]}, paired by seed against {first} (gap: mean, 95% confidence interval)', '',
             '| Variant | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | Mean | Std | Gap |',
             '|---|' + '--:|' * (len(seeds) + 3)]

    def num(x):
        return '-' if x is None else f'{x:.4f}'
    for row in summary['rows']:
        gap = '-'
        if 'gap_mean' in row:
            gap = f'{row["gap_mean"]:+.4f}' + (f' ± {row["gap_ci95"]:.4f}' if row['gap_ci95'] is not None else '')
        lines.append(f'| {row["variant"]} | ' + ' | '.join(num(v) for v in row['values'])
                     + f' | {num(row["mean"])} | {num(row["std"])} | {gap} |')
    if within is not None:
        lines.append('')
        for row in summary['rows'][1:]:
            bound = row['gap_bound']
            verdict = ('needs two seeds or more' if bound is None else
                       f'{"shown" if bound <= within else "not shown"}: the 95% interval allows gaps up to {bound:.4f}')
            lines.append(f'{row["variant"]} vs {first} within {within}: {verdict}')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3])
    parser.add_argument('--variant', nargs='+', action='append', metavar=('NAME', 'KEY=VALUE'),
                        help='a variant: its name, then its --cfg-options (default: the kernel on and off)')
    parser.add_argument('--metric', default='coco/bbox_mAP', help='the logged value compared (its last one)')
    parser.add_argument('--jobs', type=int, default=1, help='runs at a time')
    parser.add_argument('--within', type=float, help='say whether the gap is shown within this, at 95%%')
    parser.add_argument('--work-dir', default='work_dirs/seed_sweep')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='options for every run')
    args = parser.parse_args()
    with clear_errors():
        runs = plan_sweep(args.config, args.seeds, variants_from_args(args.variant), args.work_dir, args.cfg_options)
        summary = summarize_sweep(run_sweep(runs, args.metric, args.jobs))
    Path(args.work_dir, 'summary.json').write_text(json.dumps(summary, indent=2))
    print(format_sweep_markdown(summary, args.within))


if __name__ == '__main__':
    main()
