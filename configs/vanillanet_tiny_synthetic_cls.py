# The classification example: vanillanet5_imagenet.py's recipe with a small VanillaNet trained from scratch, on CPU,
# on the synthetic shapes of `tools/make_synthetic_data.py imagenet` (ImageNet's folder layout, 64x64, 4 classes, 1200
# train / 400 val images). It keeps LAMB, the BCE loss on smoothed targets, EMA, warm-up + cosine and deep training,
# and overrides what a schedule of minutes instead of 300 ImageNet epochs needs. Measured here (40 epochs, val top-1):
# - the paper's head is num_classes wide: with 4 classes it barely learns (see VanillaHead), so 256 hidden channels;
# - the ImageNet regularization (RandAugment, mixup/cutmix, random erasing) held a from-scratch net near chance:
#   33% with it (an AdamW run; LAMB stayed at 25% for 20 epochs) vs 85.5% without, so it is off here.
_base_ = './vanillanet5_imagenet.py'

data_root = 'data/synthetic_imagenet'
image_size = 64
num_classes = 4
model = dict(
    network=dict(arch=dict(_delete_=True, stem_channels=32, widths=[64, 128, 256], strides=[2, 2, 2]),
                 num_classes=num_classes, act_num=2, head_hidden_channels=256),
    mixup=None,
    channels_last=False)  # the main job runs on the CPU, where its figures were measured in NCHW

# Crops of at least 35% of the image: smaller ones would often cut the shape out.
train_transform = dict(input_size=image_size, scale=(0.35, 1.0), auto_augment=None, re_prob=0.0)
test_transform = dict(input_size=image_size, crop_pct=1.0)
train_dataloader = dict(
    batch_size=32, num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, transform=train_transform))
val_dataloader = dict(
    batch_size=50, num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, transform=test_transform))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, 2))  # 4 classes
test_evaluator = val_evaluator

max_epochs = 40
warmup_epochs = 2
optim_wrapper = dict(optimizer=dict(lr=5e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup_epochs, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
custom_hooks = [
    dict(type='DeepTrainingHook', decay_epochs=max_epochs // 2),
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1e-2, update_buffers=True,
         priority='ABOVE_NORMAL'),  # ~100 iterations of memory: this run has 1480
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False)
