# Paper Table 3: Deformable DETR R101 (teacher) -> R18 (student), COCO, 50 epochs.
_base_ = './_detrdistill_coco_recipe.py'
model = dict(
    teacher=dict(config='configs/coco/detectors/deformable-detr_r101_coco.py',
                 checkpoint='checkpoints/deformable-detr_r101_coco.pth'),
    student=dict(config='configs/coco/detectors/deformable-detr_r18_coco.py'))
