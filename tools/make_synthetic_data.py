"""Generates the synthetic shapes datasets that the example configs train and evaluate on.

    python tools/make_synthetic_data.py coco        # data/synthetic_coco: COCO format, 600 train / 150 val images
    python tools/make_synthetic_data.py imagenet    # data/synthetic_imagenet: ImageNet's folder layout,
                                                    # 300 train / 100 val images per class
    [--out DIR] [--num-train N] [--num-val N] [--size PIXELS] [--seed S]
"""
import argparse
import json

from mmvanilla.datasets import generate_synthetic_coco, generate_synthetic_image_folder
from mmvanilla.runner import clear_errors

# kind: (generator, default output, default image side); image counts default to the generator's own.
KINDS = {'coco': (generate_synthetic_coco, 'data/synthetic_coco', 128),
         'imagenet': (generate_synthetic_image_folder, 'data/synthetic_imagenet', 64)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kind', choices=KINDS, help='coco (detection) or imagenet (classification, per class counts)')
    parser.add_argument('--out', help='output directory (default: data/synthetic_<kind>)')
    parser.add_argument('--num-train', type=int, help='training images (per class for imagenet)')
    parser.add_argument('--num-val', type=int, help='validation images (per class for imagenet)')
    parser.add_argument('--size', type=int, help='side of the square images in pixels (128 coco, 64 imagenet)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    generate, out, size = KINDS[args.kind]
    counts = {k: v for k, v in (('num_train', args.num_train), ('num_val', args.num_val)) if v is not None}
    with clear_errors():
        summary = generate(args.out or out, image_size=args.size or size, seed=args.seed, **counts)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
