# DETRDistill on the embedded default with the student's backbone initialised from the teacher's
# (configs/detectors/dino128_r18w16_synthetic_student_inherit.py); its baseline is that student config alone.
_base_ = ['./detrdistill_dino_synthetic.py']
model = dict(student=dict(config='configs/detectors/dino128_r18w16_synthetic_student_inherit.py'))
