# Conditional DETR R50 student (COCO): mmdet's config as shipped.
_base_ = 'mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py'
