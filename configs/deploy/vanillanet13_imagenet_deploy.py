_base_ = '../vanillanet13_imagenet.py'

model = dict(network=dict(deploy=True))
