# The main job's instance segmenter: mask_rcnn_vanillanet13_coco.py with a small VanillaNet trained from scratch, on
# CPU, on the synthetic shapes of `tools/make_synthetic_data.py coco`. It overrides only what must change: the arch
# (and the heads' widths with it), the data, the schedule (deep training from scratch), and fewer proposals for CPU.
# As in retinanet_vanillanet_tiny_synthetic.py: GroupNorm in the neck and mask head, and act_num=2, to train from
# scratch in minutes on CPU.
_base_ = ['./_base_/models/mask_rcnn_vanillanet13.py', './_base_/datasets/synthetic_coco_instance.py',
          './_base_/schedules/deep_training_from_scratch.py']

width = 64
norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)

model = dict(
    backbone=dict(arch=dict(_delete_=True, stem_channels=48, widths=[96, 192, 192, 384], strides=[2, 2, 1, 2]),
                  act_num=2, act_lambda=0.0, init_cfg=None),
    neck=dict(in_channels=[48, 96, 192, 384], out_channels=width, norm_cfg=norm_cfg),  # the backbone's out_channels
    rpn_head=dict(in_channels=width, feat_channels=width, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=len(_base_.classes)),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=len(_base_.classes), norm_cfg=norm_cfg)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

max_epochs = 6  # a shorter run than RetinaNet: Mask R-CNN costs 4x the time per image here
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, by_epoch=True, eta_min=2e-5),
]
custom_hooks = [dict(type='DeepTrainingHook', decay_epochs=max_epochs // 2)]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
