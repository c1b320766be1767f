# Student of the embedded default, and its no-distillation baseline when trained alone: DINO at 128-d
# (AnyWidthDINO, see compress/models/dino.py), ResNet-18 at base width 16, 1 encoder + 2 decoder layers,
# deformable attention with 4 heads x 2 points (teacher: 8 x 4), FFN 512, 50 queries. 1500 iterations at batch 4.
# Why this shape: on CPU the model is bound by op count and sampling locations, not FLOPs; a 128-d copy of the
# teacher's layout ran only 1.6-1.9x faster than the teacher, this one 2.7x (eager) and 3.6x (ONNX Runtime).
_base_ = [
    '../_base_/models/dino_tiny.py', '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/student_synthetic.py', '../_base_/default_runtime.py'
]
embed_dims = 128
model = dict(
    type='AnyWidthDINO',
    neck=dict(out_channels=embed_dims),
    encoder=dict(
        num_layers=1,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4, num_points=2),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512))),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=4, num_points=2),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=512))),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(embed_dims=embed_dims))
