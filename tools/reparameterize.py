"""Convert a trained checkpoint to the deploy form (one convolution per VanillaNet layer).

    python tools/reparameterize.py CONFIG CHECKPOINT OUT_CHECKPOINT [--no-ema] [--force] [--cfg-options KEY=VALUE ...]

Refuses a checkpoint whose lambda is below 1. Converts the EMA weights when the checkpoint has them (the paper
evaluates EMA weights), checks on a random input that training and deploy forms agree, and prints the difference.
The output loads strictly into CONFIG with ``--cfg-options model.backbone.deploy=True``. An existing OUT_CHECKPOINT
is replaced only with --force, and never when it is CHECKPOINT itself.
"""
import argparse

from mmengine.config import DictAction

from mmvanilla.deploy import reparameterize_checkpoint
from mmvanilla.runner import clear_errors, load_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument('--no-ema', action='store_true', help='convert the model weights even if EMA ones exist')
    parser.add_argument('--force', action='store_true', help='replace OUT_CHECKPOINT if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    args = parser.parse_args()
    with clear_errors():
        cfg = load_config(args.config, cfg_options=args.cfg_options)
        report = reparameterize_checkpoint(cfg, args.checkpoint, args.out, use_ema=not args.no_ema,
                                           force=args.force)
    print(f'{args.out}: converted {report["source"]}; training vs deploy form on a random input: '
          f'max abs diff {report["max_abs_diff"]:.3e}, max rel diff {report["max_rel_diff"]:.3e}')


if __name__ == '__main__':
    main()
