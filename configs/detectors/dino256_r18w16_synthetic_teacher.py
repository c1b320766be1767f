# Teacher of the embedded default: DINO 256-d, ResNet-18 at base width 16, 2 encoder + 2 decoder layers,
# FFN 1024, 50 queries. Produced by `make teacher` (2000 iterations at batch 4 on 2 CPU cores, seed 0).
_base_ = [
    '../_base_/models/dino_tiny.py', '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/iter_adamw.py', '../_base_/default_runtime.py'
]
model = dict(
    encoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=1024))),
    decoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=1024))))
