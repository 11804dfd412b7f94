"""mmvanilla: VanillaNet for MMDetection 3.x.

Importing this package registers everything: the ``VanillaNet`` backbone in mmdet's ``MODELS``, the
``DeepTrainingHook`` in its ``HOOKS``, the layer-decay optimizer constructor, and the allowlist that lets mmengine's
runner checkpoints through torch's ``weights_only`` loader.
"""
from .checkpoint import register_safe_globals
from .engine import DeepTrainingHook, VanillaNetLayerDecayOptimWrapperConstructor
from .models import VanillaNet
from .models import timm_models  # noqa: F401  (registers vanillanet_5 ... with timm)

__version__ = '0.1.0'

register_safe_globals()

__all__ = ['DeepTrainingHook', 'VanillaNet', 'VanillaNetLayerDecayOptimWrapperConstructor', '__version__',
           'register_safe_globals']
