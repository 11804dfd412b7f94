# adamw_layer_decay_1x.py for a small VanillaNet trained from scratch on the synthetic shapes, on CPU: deep training
# anneals lambda 0 -> 1 over the first half, no layer-wise lr decay (no pretrained stages to protect), a larger lr with
# gradient clipping, a cosine to the end, one checkpoint and one validation at the end. It brings mmdet's runtime
# (hooks, logging) with it, as its hooks depend on the schedule.
_base_ = ['./adamw_layer_decay_1x.py', 'mmdet::_base_/default_runtime.py']

max_epochs = 40
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2e-3), paramwise_cfg=dict(decay_rate=1.0), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, by_epoch=True, eta_min=2e-5),
]
custom_hooks = [dict(type='DeepTrainingHook', decay_epochs=max_epochs // 2)]
default_hooks = dict(logger=dict(interval=25), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False)
randomness = dict(seed=0)
