# Teacher of the embedded default: DINO 256-d, ResNet-18 at base width 32, 4 encoder + 4 decoder layers.
# Produced by `make teacher` (2000 iterations, batch 4, on 2 CPU cores).
_base_ = [
    '../_base_/models/dino_tiny.py', '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/iter_adamw.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(base_channels=32),
    neck=dict(in_channels=[64, 128, 256]),
    encoder=dict(num_layers=4, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=1024))),
    decoder=dict(num_layers=4, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=1024))))
