from .hooks import DeepTrainingHook
from .optimizers import VanillaNetLayerDecayOptimWrapperConstructor

__all__ = ['DeepTrainingHook', 'VanillaNetLayerDecayOptimWrapperConstructor']
