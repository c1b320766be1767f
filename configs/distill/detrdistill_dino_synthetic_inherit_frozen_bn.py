# DETRDistill into the inherited-backbone student under the COCO recipe for a pretrained backbone
# (configs/detectors/dino128_r18w16_synthetic_student_inherit_frozen_bn.py); its baseline is that config alone.
# The backbone lr x0.1 is repeated here: the distiller's optimizer comes from this file, and 'backbone' also
# matches the student's parameters under the distiller ('student.backbone.*').
_base_ = ['./detrdistill_dino_synthetic.py']
# The losses this recipe was measured with (README tables): the default's before 2026-11-28, the cosine feature
# mask at weight 5.0 and the query prior at 1.0; the default has since moved to the box mask and 2.0.
model = dict(feature_kd=dict(mask='cosine', weight=5.0), query_prior=dict(weight=1.0),
             student=dict(config='configs/detectors/dino128_r18w16_synthetic_student_inherit_frozen_bn.py'))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
