# Student of the embedded default, trained alone (the no-distillation baseline): DINO 256-d,
# ResNet-18 at base width 16, 2 encoder + 2 decoder layers, FFN 512.
_base_ = [
    '../_base_/models/dino_tiny.py', '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/iter_adamw.py', '../_base_/default_runtime.py'
]
max_iters = 1000
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[850], gamma=0.1)
]
