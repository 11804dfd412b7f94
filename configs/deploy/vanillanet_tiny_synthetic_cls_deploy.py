_base_ = '../vanillanet_tiny_synthetic_cls.py'

model = dict(network=dict(deploy=True))
