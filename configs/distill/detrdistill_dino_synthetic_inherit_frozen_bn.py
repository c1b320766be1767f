# DETRDistill into the inherited-backbone student under the COCO recipe for a pretrained backbone
# (configs/detectors/dino128_r18w16_synthetic_student_inherit_frozen_bn.py); its baseline is that config alone.
# The backbone lr x0.1 is repeated here: the distiller's optimizer comes from this file, and 'backbone' also
# matches the student's parameters under the distiller ('student.backbone.*'). The losses come from the
# _inherit recipe (those both were measured with).
_base_ = ['./detrdistill_dino_synthetic_inherit.py']
model = dict(student=dict(config='configs/detectors/dino128_r18w16_synthetic_student_inherit_frozen_bn.py'))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
