"""The main job (``make demo``): VanillaNet detectors and a classifier trained from scratch on generated shapes, on CPU.

Generates the synthetic COCO-format and image-folder data, then for RetinaNet, Mask R-CNN and an image classifier
trains with deep training, evaluates (COCO mAP; top-1/top-2 accuracy), re-parameterizes, evaluates the deploy form
(drawing a few detections), and prints summary tables.

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root DIR] [--quick] [--verbose]

One line per stage on the console; each tool's full output in work_dirs/demo/<model>/<stage>.log (--verbose: on the
console too).
"""
import argparse

from mmvanilla.demo import run_demo
from mmvanilla.runner import clear_errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', help='detection data (default: data/synthetic_coco for the default set, '
                        'a folder named by --num-train/--num-val/--seed otherwise)')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=150)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true', help='2 epochs per model: checks the pipeline, not accuracy')
    parser.add_argument('--verbose', action='store_true', help='show every tool\'s full output on the console too')
    args = parser.parse_args()
    with clear_errors():
        run_demo(args.work_dir, args.data_root, args.num_train, args.num_val, args.seed, args.quick,
                 verbose=args.verbose)


if __name__ == '__main__':
    main()
