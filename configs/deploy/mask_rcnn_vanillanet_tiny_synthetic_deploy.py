_base_ = '../mask_rcnn_vanillanet_tiny_synthetic.py'

model = dict(backbone=dict(deploy=True))
