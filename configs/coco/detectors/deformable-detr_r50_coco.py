# Deformable DETR R50 student (COCO): mmdet's config as shipped (ImageNet-initialised backbone).
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
