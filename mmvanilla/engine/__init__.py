from .hooks import DeepTrainingHook, NonFiniteLoss, NonFiniteLossHook
from .interrupts import Interrupted, StopOnSignalHook
from .optimizers import VanillaNetLayerDecayOptimWrapperConstructor

__all__ = ['DeepTrainingHook', 'Interrupted', 'NonFiniteLoss', 'NonFiniteLossHook', 'StopOnSignalHook',
           'VanillaNetLayerDecayOptimWrapperConstructor']
