# Paper Table 1: Conditional DETR R101 (teacher) -> R50 (student), COCO, 50 epochs, lr 1e-4 as mmdet ships it.
_base_ = './_detrdistill_coco_recipe.py'
optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))
model = dict(
    teacher=dict(config='configs/coco/detectors/conditional-detr_r101_coco.py',
                 checkpoint='checkpoints/conditional-detr_r101_coco.pth'),
    student=dict(config='configs/coco/detectors/conditional-detr_r50_coco.py'))
