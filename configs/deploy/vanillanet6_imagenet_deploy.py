_base_ = '../vanillanet6_imagenet.py'

model = dict(network=dict(deploy=True))
