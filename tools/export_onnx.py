"""Export a trained VanillaNet classifier, backbone or detector to ONNX, checked with onnxruntime.

    python tools/export_onnx.py CONFIG CHECKPOINT [--out FILE.onnx] [--part {auto,classifier,backbone,detector,head}]
        [--shape H W] [--batch N] [--opset N] [--no-ema] [--force] [--cfg-options KEY=VALUE ...]

CHECKPOINT is a runner checkpoint at lambda = 1 (re-parameterized on the way) or a deploy-form one from
tools/reparameterize.py; a checkpoint at lambda < 1 is refused. The graph is always the deploy form, with a dynamic
batch axis; its input is the image after the config's data_preprocessor (normalization and padding are not in the
graph).

--part detector (the default for detection configs) exports the detector end to end: RetinaNet-like single-stage
and Faster/Mask R-CNN-like two-stage detectors with anchors, box decoding, NMS, RoIAlign and masks in the graph.
Inputs "input" (N, 3, H, W) and "image_shape" (N, 2: each image's height and width before padding); outputs
"boxes", "scores", "labels", "num_detections" (and "masks"), padded to the config's max_per_img; batch, height and
width dynamic (--shape is the example's). tools/test_onnx.py evaluates the file on the config's test split.
--part head exports a single-stage detector up to its raw head outputs (no anchors, decoding or NMS).

The tool runs the file with onnxruntime and compares it with PyTorch on a random input (outputs within a relative
1e-4; a detector's detections box by box, within 1e-3), else nothing is written. An existing output is replaced only
with --force.
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
                        help='auto: classifier for a classification config, detector (end to end) for a detection one')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='input height and width (fixed in the graph, except a detector\'s; default 224 224)')
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
    dynamic = ', '.join(report.get('dynamic', ['batch']))
    print(f'{report["path"]}: {report["part"]} of {args.checkpoint} ({report["source"]}, {form}), '
          f'opset {report["opset"]}, dynamic: {dynamic}')
    for entry in report.get('inputs') or [report['input']]:
        print(f'  input {entry["name"]}: {entry["shape"]}')
    if report['preprocess']:
        print(f'  input must be preprocessed as the config\'s data_preprocessor: {report["preprocess"]}')
    for output in report['outputs']:
        print(f'  output {output["name"]}: {output["shape"]}')
    if report['note']:
        print(f'  note: {report["note"]}')
    if 'comparison' in report:
        comparison = report['comparison']
        print(f'onnxruntime vs PyTorch on a random input: {comparison["agreeing"]}/{comparison["images"]} images '
              f'agree, {comparison["detections"]} detections, max box diff {comparison["max_box_diff"]:.3e} px, '
              f'max score diff {comparison["max_score_diff"]:.3e}')
        if not comparison['detections']:
            print('  (no detection on the random input to compare: tools/test_onnx.py compares them on real images)')
    else:
        print(f'onnxruntime vs PyTorch on a random input: max abs diff {report["max_abs_diff"]:.3e}, '
              f'max rel diff {report["max_rel_diff"]:.3e}')

if __name__ == '__main__':
    main()
