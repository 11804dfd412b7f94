_base_ = '../vanillanet5_imagenet.py'

model = dict(network=dict(deploy=True))
