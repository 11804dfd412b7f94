_base_ = '../mask_rcnn_vanillanet13_coco.py'

model = dict(backbone=dict(deploy=True))
