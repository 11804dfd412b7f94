# Mask R-CNN with a VanillaNet-13 backbone, as the paper fine-tunes it (Chen et al. 2023, Sec. 4.3): mmdet's Mask R-CNN
# with VanillaNet in place of ResNet-50.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
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
        out_indices=(0, 1, 2, 3),
        act_lambda=1.0,  # fine-tuning keeps the trained net's identity activation, as in the paper
        fast_dwconv=True,  # NCHW with the Triton depthwise kernel: the fastest (see retinanet_vanillanet13.py)
        with_cp=False,  # True: about a third of the memory for about a quarter more step time; or [0, 1, 2]
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # VanillaNet('13', out_indices=(0, 1, 2, 3)).out_channels; tests/test_configs.py keeps them in step.
    neck=dict(in_channels=[512, 1024, 2048, 4096]))

# SyncBN when launched distributed; plain BN in a single process.
sync_bn = 'torch'
