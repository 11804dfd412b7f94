_base_ = '../vanillanet9_imagenet.py'

model = dict(network=dict(deploy=True))
