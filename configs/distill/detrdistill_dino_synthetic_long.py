# The longer-schedule recipe: DETRDistill from the teacher trained twice as long (33.7 AP), 3000 iterations
# (6 epochs) instead of the default's 1500; `make distill DISTILL_CONFIG=configs/distill/detrdistill_dino_synthetic_long.py`.
# Why a separate recipe: at 1500 iterations the stronger teacher gives no more gain than the shipped one (+4.53
# against +5.60, seeds 0-2), at 3000 it gives more (seeds 0-2: 26.27 AP against 23.20 from the shipped teacher
# and 16.83 for the student alone trained as long; README, "Where the targets stand"). The schedule is exactly
# `python -m compress bench-kd --config configs/distill/detrdistill_dino_synthetic_teacher_4000it.py --iters 3000`'s
# (tests/test_configs.py checks it), so the measured figures are this config's.
_base_ = ['./detrdistill_dino_synthetic_teacher_4000it.py']
max_iters = 3000
train_cfg = dict(max_iters=max_iters, val_interval=1000)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[int(max_iters * 0.85)],
         gamma=0.1)
]
