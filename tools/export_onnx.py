"""Export a trained VanillaNet classifier, backbone or single-stage detector to ONNX, checked with onnxruntime.

    python tools/export_onnx.py CONFIG CHECKPOINT [--out FILE.onnx] [--part {auto,classifier,backbone,detector}]
        [--shape H W] [--batch N] [--opset N] [--no-ema] [--force] [--cfg-options KEY=VALUE ...]

CHECKPOINT is a runner checkpoint at lambda = 1 (re-parameterized on the way) or a deploy-form one from
tools/reparameterize.py; a checkpoint at lambda < 1 is refused. The graph is always the deploy form, with a dynamic
batch axis; its input is the image after the config's data_preprocessor (normalization is not in the graph).

--part detector exports a single-stage detector (RetinaNet) up to its raw head outputs: per-level cls_score and
bbox_pred maps, without anchors, box decoding or NMS. A two-stage detector (Mask R-CNN) is refused (its forward runs
NMS and RoIAlign on a data-dependent number of proposals; mmdet 3.x leaves that to mmdeploy): use --part backbone.

The tool runs the file with onnxruntime and compares it with PyTorch (max relative error <= 1e-4, else nothing is
written). An existing output is replaced only with --force.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction

from mmvanilla.export import PARTS, export_checkpoint
from mmvanilla.runner import clear_errors, load_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', help='the .onnx file (default: CHECKPOINT with .onnx for .pth)')
    parser.add_argument('--part', choices=PARTS, default='auto',
                        help='auto: classifier for a classification config, detector for a detection one')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='input height and width (fixed in the graph; default 224 224)')
    parser.add_argument('--batch', type=int, default=1, help='batch of the example input (the axis is dynamic)')
    parser.add_argument('--opset', type=int, help='ONNX opset, 18 or later (default: torch\'s)')
    parser.add_argument('--no-ema', action='store_true', help='export the model weights even if EMA ones exist')
    parser.add_argument('--force', action='store_true', help='replace the .onnx file if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    args = parser.parse_args()
    with clear_errors():
        cfg = load_config(args.config, cfg_options=args.cfg_options)
        out = args.out or osp.splitext(args.checkpoint)[0] + '.onnx'
        report = export_checkpoint(cfg, args.checkpoint, out, part=args.part, input_size=args.shape,
                                   batch_size=args.batch, opset=args.opset, use_ema=not args.no_ema,
                                   force=args.force)
    form = 're-parameterized from the training form' if report['reparameterized'] else 'deploy form'
    print(f'{report["path"]}: {report["part"]} of {args.checkpoint} ({report["source"]}, {form}), '
          f'opset {report["opset"]}, input "input" {report["input"]["shape"]} (batch dynamic)')
    if report['preprocess']:
        print(f'  input must be preprocessed as the config\'s data_preprocessor: {report["preprocess"]}')
    for output in report['outputs']:
        print(f'  output {output["name"]}: {output["shape"]}')
    if report['note']:
        print(f'  note: {report["note"]}')
    print(f'onnxruntime vs PyTorch on a random input: max abs diff {report["max_abs_diff"]:.3e}, '
          f'max rel diff {report["max_rel_diff"]:.3e}')


if __name__ == '__main__':
    main()
