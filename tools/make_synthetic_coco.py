"""Generates the synthetic COCO-format shapes dataset that the detection configs train and evaluate on.

Example:
    python tools/make_synthetic_coco.py --out data/synthetic_coco --num-train 600 --num-val 150
"""
import argparse
import json

from mmvanilla.datasets import generate_synthetic_coco


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/synthetic_coco', help='output directory')
    parser.add_argument('--num-train', type=int, default=600, help='number of training images')
    parser.add_argument('--num-val', type=int, default=150, help='number of validation images')
    parser.add_argument('--size', type=int, default=128, help='side of the square images in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        summary = generate_synthetic_coco(args.out, num_train=args.num_train, num_val=args.num_val,
                                          image_size=args.size, seed=args.seed)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f'error: {error}')
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
