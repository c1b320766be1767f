"""Training hooks named in configs."""

from __future__ import annotations

import math

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from compress.errors import TrainingError


@HOOKS.register_module()
class NaNLossHook(Hook):
    """Stop at the first non-finite loss with a one-line message instead of training on garbage.

    mmdet's CheckInvalidLossHook asserts only every N iterations with a bare message; a NaN here is almost
    always a too-high learning rate or a broken annotation, so the message says both.
    """

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        bad = [k for k, v in outputs.items() if "loss" in k and not math.isfinite(float(torch.as_tensor(v).detach()))]
        if bad:
            raise TrainingError(
                f"non-finite loss ({', '.join(bad)}) at iteration {runner.iter + 1} of {runner.cfg.filename}; "
                f"lower optim_wrapper.optimizer.lr or check the annotations for degenerate boxes")
