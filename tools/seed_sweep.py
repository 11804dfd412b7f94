"""Train one config with several seeds in several variants (in parallel) and compare a final metric, seed by seed.

By default the variants are the series activation's Triton kernel on and off (``model.backbone.fast_dwconv``), the
question of issue 11's "same learning" target:

    python tools/seed_sweep.py configs/retinanet_vanillanet_tiny_synthetic.py --seeds 0 1 2 3 --jobs 8 \\
        --within 0.02 [--work-dir work_dirs/seed_sweep] [--metric coco/bbox_mAP] [--cfg-options KEY=VALUE ...]

Other variants: ``--variant NAME KEY=VALUE ...`` (repeat it; at least two). Each run's output is in
``WORK_DIR/<variant>/seed<S>/train.log``; run the same command again to continue a sweep that was cut short.
"""
import argparse
import json
from pathlib import Path

from mmvanilla.runner import clear_errors
from mmvanilla.sweep import format_sweep_markdown, plan_sweep, run_sweep, summarize_sweep, variants_from_args


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
