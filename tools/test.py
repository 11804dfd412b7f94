"""Evaluate a checkpoint (COCO box/mask mAP for detectors) with mmdet's command-line conventions.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--metrics-out FILE.json] [--force]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

A deploy-form checkpoint (from tools/reparameterize.py) needs ``--cfg-options model.backbone.deploy=True``. A
checkpoint that does not fit CONFIG's model is refused before the evaluation starts.
"""
import argparse

from mmengine.config import DictAction

from mmvanilla.runner import clear_errors, load_config, test


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir', help='where the logs go (default: work_dirs/<config name>)')
    parser.add_argument('--show-dir', help='write images with the predictions drawn into this folder '
                        '(relative to the work dir\'s timestamped folder, as in mmdet)')
    parser.add_argument('--metrics-out', help='also write the metrics to this JSON file')
    parser.add_argument('--force', action='store_true', help='replace the --metrics-out file if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    with clear_errors():
        cfg = load_config(args.config, args.work_dir, args.cfg_options, args.launcher)
        test(cfg, args.checkpoint, show_dir=args.show_dir, metrics_out=args.metrics_out, force=args.force)


if __name__ == '__main__':
    main()
