_base_ = '../retinanet_vanillanet_tiny_synthetic.py'

model = dict(backbone=dict(deploy=True))
