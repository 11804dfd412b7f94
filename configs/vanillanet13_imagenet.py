# VanillaNet-13 on ImageNet-1k: vanillanet5_imagenet.py's recipe (lr 3.5e-3 at batch 1024), evaluated as the paper
# evaluates VanillaNet-12 and -13: crop_pct 0.95.
# Paper's result: 82.05% top-1 (their figure, not measured here).
_base_ = './vanillanet5_imagenet.py'
model = dict(network=dict(arch='13'))
test_transform = dict(crop_pct=0.95)
val_dataloader = dict(dataset=dict(transform=test_transform))
test_dataloader = val_dataloader
