# The embedded default distilled from the teacher trained twice as long (33.7 AP against the shipped one's
# 16.3; `configs/detectors/dino256_r18w16_synthetic_teacher_4000it.py`); everything else the default's.
# `make bench-kd DISTILL_CONFIG=configs/distill/detrdistill_dino_synthetic_teacher_4000it.py
# KD_OUT=work_dirs/bench_kd_teacher_4000it` runs the matrix with it.
_base_ = ['./detrdistill_dino_synthetic.py']
model = dict(teacher=dict(checkpoint='checkpoints/teacher_dino_synthetic_4000it.pth'))
