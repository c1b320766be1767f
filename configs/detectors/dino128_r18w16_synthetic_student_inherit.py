# The embedded student with its ResNet-18 (base width 16) initialised from the teacher's backbone, the one trained
# backbone of that shape here (nothing can be downloaded): the synthetic stand-in for the ImageNet-pretrained
# backbones every COCO student starts from. Only the backbone is inherited (neck and transformer differ in width).
# Full lr and train-mode BatchNorm on the backbone, as in the from-scratch recipe. At batch 4 the BN statistics
# drift from the teacher's, the student alone drops to 1.03 AP at 600 iterations and distillation gains +2.87;
# under the COCO recipe for a pretrained backbone (..._inherit_frozen_bn.py) the student alone keeps 1.77 and
# the gain is +1.73 (README, "Student backbone from the teacher", which also says why neither is the default).
_base_ = ['./dino128_r18w16_synthetic_student.py']
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/teacher_dino_synthetic.pth',
                                         prefix='backbone.')))
