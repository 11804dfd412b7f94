# Mask R-CNN with VanillaNet-13 on COCO: the paper's detection recipe (Chen et al. 2023, Sec. 4.3) in mmdet 3.x form.
# Paper's result: 44.3 box AP, 40.1 mask AP (their figures, not measured here).
_base_ = ['./_base_/models/mask_rcnn_vanillanet13.py', 'mmdet::_base_/datasets/coco_instance.py',
          './_base_/schedules/adamw_layer_decay_1x.py', 'mmdet::_base_/default_runtime.py']

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(1333, short) for short in range(480, 1025, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=1.3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=_base_.max_epochs, by_epoch=True, milestones=[10, 12], gamma=0.1),
]
