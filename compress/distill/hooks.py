"""Training hooks named in configs."""

from __future__ import annotations

import math

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from compress.errors import ConfigError, TrainingError


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside mmengine's DDP wrapper (or the model itself); here so that hooks and
    compress.training share it without importing each other."""
    return getattr(model, "module", model)


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


@HOOKS.register_module()
class QueryPriorScheduleHook(Hook):
    """Run the query-prior group for the first ``until_iter`` iterations only.

    The paper motivates the group by early training, when the student's assignment still flips (Sec. 3.4);
    every step pays for its decoding, its losses and the teacher's assignment. On the default pair it carried
    its gain until two thirds of the schedule and nothing after (README), hence a switch point rather than a
    decaying weight. A hook, like mmdet's PipelineSwitchHook, so the switch point lives in the config and a
    resumed run switches by the restored iteration. Off unless a config lists it (``custom_hooks``).
    """

    priority = "VERY_HIGH"

    def __init__(self, until_iter: int) -> None:
        if until_iter < 1:
            raise ConfigError(f"QueryPriorScheduleHook.until_iter must be >= 1, got {until_iter}")
        self.until_iter = until_iter

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        if not getattr(getattr(model, "query_cfg", None), "enable", False):
            raise ConfigError("QueryPriorScheduleHook needs a DETRDistiller with query_prior.enable=True")
        # only mmengine's DDP wrapper has the attribute: an unwrapped model passes
        if model.query_proj is not None and not getattr(runner.model, "find_unused_parameters", True):
            raise ConfigError("QueryPriorScheduleHook leaves the query projection without gradients after "
                              f"iteration {self.until_iter}; set model_wrapper_cfg=dict(type="
                              "'MMDistributedDataParallel', find_unused_parameters=True)")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        unwrap(runner.model).query_cfg.enable = runner.iter < self.until_iter
