"""Convert a checkpoint of the paper's code (github.com/huawei-noah/VanillaNet) to mmvanilla's names.

    python tools/convert_checkpoint.py IN OUT [--config CONFIG] [--no-ema] [--force] [--cfg-options KEY=VALUE ...]

IN is an mmdet 2.x VanillaNet detector (RetinaNet, Mask R-CNN: its backbone is renamed, neck and heads keep their
names) or an ImageNet classifier (``model``/``model_ema``: EMA weights unless --no-ema). OUT loads strictly into
mmvanilla's configs (``load_from=OUT``). Lists every key it could not map. With --config, checks that OUT loads
strictly into that config's model and exits with status 1 if not. An existing OUT is replaced only with --force,
and never when it is IN itself.

Not needed to start from the paper's ImageNet weights: ``init_cfg=dict(type='Pretrained', checkpoint=IN)`` reads
them as they are.
"""
import argparse
import sys

import torch
from mmengine.config import DictAction

from mmvanilla.apis import build_model
from mmvanilla.checkpoint import convert_checkpoint_file
from mmvanilla.runner import clear_errors, load_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', metavar='IN')
    parser.add_argument('dst', metavar='OUT')
    parser.add_argument('--config', help='check that OUT loads strictly into this config\'s model')
    parser.add_argument('--no-ema', action='store_true', help='convert the model weights even if EMA ones exist')
    parser.add_argument('--force', action='store_true', help='replace OUT if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    args = parser.parse_args()
    with clear_errors():
        model = None
        if args.config:
            with torch.device('meta'):  # shapes only: no memory, no weights
                model = build_model(load_config(args.config, cfg_options=args.cfg_options))
        report = convert_checkpoint_file(args.src, args.dst, model, use_ema=not args.no_ema, force=args.force)
    print(f'{args.dst}: {report["kind"]} in {report["form"]} form, weights from {report["source"]}; renamed '
          f'{report["renamed"]} keys, kept {len(report["kept"])}, dropped {len(report["dropped"])}')
    problems = 0
    for name in ('unmapped', 'dropped', 'missing', 'unexpected', 'mismatched'):
        for key in report.get(name, []):
            print(f'  {name}: {key}')
        if name != 'dropped':
            problems += len(report.get(name, []))
    if args.config:
        print(f'loads strictly into {args.config}' if not problems else
              f'{problems} keys do not fit {args.config} (see above)')
    return 1 if args.config and problems else 0


if __name__ == '__main__':
    sys.exit(main())
