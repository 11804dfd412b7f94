"""Builds every VanillaNet variant, prints its stage shapes and parameter counts, and checks re-parameterization.

    python tools/describe_variants.py [--arch 5 9 13] [--size 224]
"""
import argparse

import torch
from mmengine.logging import MMLogger

from mmvanilla.models import ARCH_SETTINGS, VanillaNet, min_input_size
from mmvanilla.runner import clear_errors


def randomize_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Gives every BatchNorm non-trivial statistics so the deploy check is not vacuous."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', nargs='+', default=list(ARCH_SETTINGS), choices=list(ARCH_SETTINGS))
    parser.add_argument('--size', type=int, default=224)
    args = parser.parse_args()
    with clear_errors():
        smallest = max(min_input_size(arch) for arch in args.arch)
        if args.size < smallest:
            raise ValueError(f'--size {args.size} is too small: these variants downsample by up to {smallest}, so '
                             f'--size must be at least {smallest}')
    logger = MMLogger.get_instance('mmvanilla')
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, args.size, args.size, generator=gen)
    logger.info(f'{"arch":<17} {"train params":>12} {"deploy params":>13}  {"stage shapes (C x H x W)":<58} '
                f'max rel diff')
    for arch in args.arch:
        net = VanillaNet(arch, out_indices=(0, 1, 2, 3), act_lambda=1.0).eval()
        randomize_norms(net, gen)
        train_params = sum(p.numel() for p in net.parameters())
        before = net(x)
        net.switch_to_deploy()
        after = net(x)
        deploy_params = sum(p.numel() for p in net.parameters())
        diff = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(before, after))
        shapes = ', '.join('x'.join(map(str, f.shape[1:])) for f in after)
        logger.info(f'{arch:<17} {train_params / 1e6:>11.2f}M {deploy_params / 1e6:>12.2f}M  {shapes:<58} {diff:.1e}')


if __name__ == '__main__':
    main()
