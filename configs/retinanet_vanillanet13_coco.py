# RetinaNet with VanillaNet-13 on COCO: the paper's detection recipe (Chen et al. 2023, Sec. 4.3) in mmdet 3.x form.
# Paper's result: 43.0 box AP (their figure, not measured here).
_base_ = ['./_base_/models/retinanet_vanillanet13.py', 'mmdet::_base_/datasets/coco_detection.py',
          './_base_/schedules/adamw_layer_decay_1x.py', 'mmdet::_base_/default_runtime.py']

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, short) for short in range(480, 1025, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=8e-5))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=_base_.max_epochs, by_epoch=True, milestones=[10, 11], gamma=0.1),
]
