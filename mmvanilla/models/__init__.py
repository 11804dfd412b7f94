from .fusion import fuse_conv_bn, merge_conv_1x1
from .layers import ConvBN, DeepTrainingConv, SeriesActivation
from .vanillanet import ARCH_SETTINGS, VanillaNet, resolve_arch

__all__ = ['ARCH_SETTINGS', 'ConvBN', 'DeepTrainingConv', 'SeriesActivation', 'VanillaNet', 'fuse_conv_bn',
           'merge_conv_1x1', 'resolve_arch']
