# Conditional DETR R101 teacher (COCO).
_base_ = 'mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py'
model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
