# VanillaNet-6 on ImageNet-1k: vanillanet5_imagenet.py's recipe with the paper's lr of 4.8e-3 for this size.
# Paper's result: 76.36% top-1 (their figure, not measured here).
_base_ = './vanillanet5_imagenet.py'
model = dict(network=dict(arch='6'))
optim_wrapper = dict(optimizer=dict(lr=4.8e-3))
