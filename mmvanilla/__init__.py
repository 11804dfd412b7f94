"""mmvanilla: VanillaNet for MMDetection 3.x.

Importing this package registers everything: the ``VanillaNet`` backbone, ``VanillaNetClassifier`` and
``ImageClassifier`` in mmdet's ``MODELS``, the ``DeepTrainingHook`` in its ``HOOKS``, the layer-decay optimizer
constructor, timm's LAMB and losses, ``ImageFolderDataset``, the ``Accuracy`` metric, the ``vanillanet_*`` timm
models, the allowlist that lets mmengine's runner checkpoints through torch's ``weights_only`` loader, and the
package in mmengine's table of config packages, so that a config read after this import can inherit the packaged
configs as ``_base_ = 'mmvanilla::deploy/...'`` or ``'mmvanilla::_base_/...'`` (in a wheel and in an editable install
alike: :mod:`mmvanilla.packaged`).
"""
from mmengine.config.utils import MODULE2PACKAGE

from .checkpoint import register_safe_globals
from .datasets import ImageFolderDataset
from .engine import DeepTrainingHook, VanillaNetLayerDecayOptimWrapperConstructor
from .evaluation import Accuracy
from .models import ImageClassifier, VanillaNet, VanillaNetClassifier
from .models import timm_models  # noqa: F401  (registers vanillanet_5 ... with timm)
from .packaged import LOCATOR

__version__ = '0.1.0'

register_safe_globals()
MODULE2PACKAGE['mmvanilla'] = LOCATOR  # mmengine resolves `package::` only for the names listed there

__all__ = ['Accuracy', 'DeepTrainingHook', 'ImageClassifier', 'ImageFolderDataset', 'VanillaNet',
           'VanillaNetClassifier', 'VanillaNetLayerDecayOptimWrapperConstructor', '__version__',
           'register_safe_globals']
