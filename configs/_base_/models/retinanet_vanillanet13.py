# RetinaNet with a VanillaNet-13 backbone, as the paper fine-tunes it (Chen et al. 2023, Sec. 4.3): mmdet's RetinaNet
# (and its test-time augmentation) with VanillaNet in place of ResNet-50.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::retinanet/retinanet_tta.py']
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
        # about a quarter more step time for a third of the memory; with_cp=[0, 1, 2] spares the last stage (7% of
        # the activations, 19% of the forward FLOPs) from recomputation (not yet timed on a GPU).
        fast_dwconv=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # VanillaNet('13', out_indices=(1, 2, 3)).out_channels; tests/test_configs.py keeps them in step.
    neck=dict(in_channels=[1024, 2048, 4096], start_level=0, num_outs=5))

# SyncBN when launched distributed; plain BN in a single process.
sync_bn = 'torch'
