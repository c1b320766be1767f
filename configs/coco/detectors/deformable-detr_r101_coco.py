# Deformable DETR R101 teacher (COCO): mmdet's R50 config with a ResNet-101 backbone. Its weights come from
# the teacher checkpoint, so the ImageNet init is only used when training it yourself.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
