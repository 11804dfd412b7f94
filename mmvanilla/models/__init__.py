from .fusion import fuse_conv_bn, merge_conv_1x1
from .classifier import VanillaNetClassifier
from .heads import VanillaHead
from .image_classifier import ImageClassifier
from .layers import ConvBN, DeepTrainingConv, SeriesActivation
from .official import OFFICIAL_KEY_RULES, convert_official_checkpoint, map_official_keys
from .vanillanet import ARCH_SETTINGS, VanillaNet, min_input_size, resolve_arch

__all__ = ['ARCH_SETTINGS', 'ConvBN', 'DeepTrainingConv', 'ImageClassifier', 'OFFICIAL_KEY_RULES',
           'SeriesActivation', 'VanillaHead', 'VanillaNet', 'VanillaNetClassifier', 'convert_official_checkpoint',
           'fuse_conv_bn', 'map_official_keys', 'merge_conv_1x1', 'min_input_size', 'resolve_arch']
