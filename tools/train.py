"""Train a detector (or classifier) from a config, with mmdet's command-line conventions.

    python tools/train.py configs/retinanet_vanillanet13_coco.py [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--allow-nonfinite-loss] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

Ctrl-C (SIGINT) or SIGTERM stops it at any moment with exit status 130 or 143, naming the newest complete
checkpoint; --resume continues from it. One training at a time may use a work dir.
"""
import argparse

from mmengine.config import DictAction

from mmvanilla.runner import clear_errors, load_config, train


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const=True, default=None,
                        help='resume from CKPT, or from the latest checkpoint in the work dir if none is given')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the actual batch size')
    parser.add_argument('--allow-nonfinite-loss', action='store_true',
                        help='train on when the loss becomes NaN or infinite (by default training stops, with the '
                             'iteration and the usual causes)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    with clear_errors():
        cfg = load_config(args.config, args.work_dir, args.cfg_options, args.launcher)
        train(cfg, resume=args.resume, amp=args.amp, auto_scale_lr=args.auto_scale_lr,
              allow_nonfinite_loss=args.allow_nonfinite_loss)


if __name__ == '__main__':
    main()
