# Paper Table 1: Deformable DETR R101 (teacher) -> R50 (student), COCO, 50 epochs on 8 GPUs x 2 images.
# Put the trained R101 teacher at the checkpoint path (or override model.teacher.checkpoint).
_base_ = './_detrdistill_coco_recipe.py'
model = dict(
    teacher=dict(config='configs/coco/detectors/deformable-detr_r101_coco.py',
                 checkpoint='checkpoints/deformable-detr_r101_coco.pth'),
    student=dict(config='configs/coco/detectors/deformable-detr_r50_coco.py'))
