# DINO-4scale R50 (teacher, mmdet model zoo 12e weights) -> R18 (student), COCO, DINO's 12-epoch schedule.
_base_ = './_detrdistill_coco_recipe.py'
optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(custom_keys=dict(backbone=dict(lr_mult=0.1))))
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[11], gamma=0.1)]
model = dict(
    teacher=dict(config='configs/coco/detectors/dino-4scale_r50_coco.py',
                 checkpoint='checkpoints/dino-4scale_r50_8xb2-12e_coco.pth'),
    student=dict(config='configs/coco/detectors/dino-4scale_r18_coco.py'))
