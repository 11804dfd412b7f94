# VanillaNet-9 on ImageNet-1k: vanillanet5_imagenet.py's recipe (lr 3.5e-3 at batch 1024).
# Paper's result: 79.87% top-1 (their figure, not measured here).
_base_ = './vanillanet5_imagenet.py'
model = dict(network=dict(arch='9'))
