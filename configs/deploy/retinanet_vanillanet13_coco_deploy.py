_base_ = '../retinanet_vanillanet13_coco.py'

model = dict(backbone=dict(deploy=True))
