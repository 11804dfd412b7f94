# RetinaNet with VanillaNet-13 on COCO: the paper's detection recipe (Chen et al. 2023, Sec. 4.3) in mmdet 3.x form.
# Paper's result: 43.0 box AP (their figure, not measured here).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvanilla'], allow_failed_imports=False)

# The paper's ImageNet-pretrained detection checkpoint; override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH (or set it to None to train from scratch).
pretrained = 'checkpoints/vanillanet_13_act_num_4_kd_pretrain.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='VanillaNet',
        arch='13',
        act_num=4,
        out_indices=(1, 2, 3),
        act_lambda=1.0,  # fine-tuning keeps the trained net's identity activation, as in the paper
        # NCHW (mmdet's layout) is the fastest here: mmvanilla's Triton kernel runs the 9x9 depthwise convolutions,
        # which cuDNN takes only in channels_last and 12x slower (README, speed on the GPU). with_cp=True trades
        # about a quarter more step time for a third of the memory.
        fast_dwconv=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # VanillaNet('13', out_indices=(1, 2, 3)).out_channels; tests/test_configs.py keeps them in step.
    neck=dict(in_channels=[1024, 2048, 4096], start_level=0, num_outs=5))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, short) for short in range(480, 1025, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='VanillaNetLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=8e-5, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.6, num_layers=6))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[10, 11], gamma=0.1),
]

# SyncBN when launched distributed; plain BN in a single process.
sync_bn = 'torch'
# The paper trains with 4 images per GPU on 8 GPUs.
auto_scale_lr = dict(base_batch_size=32)
