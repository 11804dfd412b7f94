# The paper's detection fine-tuning schedule (Chen et al. 2023, Sec. 4.3): AdamW with layer-wise lr decay over
# VanillaNet's stages, 12 epochs, warm-up then steps. Each detector config sets its lr and its steps.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='VanillaNetLayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=None,  # each detector config sets the paper's figure
                    betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.6, num_layers=6))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)

# The paper trains with 4 images per GPU on 8 GPUs.
auto_scale_lr = dict(base_batch_size=32)
