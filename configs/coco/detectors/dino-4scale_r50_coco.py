# DINO-4scale R50 teacher (COCO): mmdet's config as shipped; mmdet's model zoo has trained weights for it.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
