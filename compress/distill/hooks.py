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


# The distiller's attribute holding each loss section's config, by the name the config gives the section.
LOSS_SECTIONS = {"logits_kd": "logits_cfg", "feature_kd": "feature_cfg", "query_prior": "query_cfg",
                 "contrastive_kd": "contrast_cfg"}
DECAYS = ("linear", "step")


@HOOKS.register_module()
class LossWeightScheduleHook(Hook):
    """Scale one loss section's weight from its configured value down to zero by ``until_iter``.

    FitNets trained its hints as a first stage before the task loss took over; on the default pair the feature
    term at a weight large enough to help the student alone (10) costs the full method later in training, when
    it competes with the logits and query terms (docs/bench_kd_results.md). ``decay='linear'`` ramps the weight
    down to zero at ``until_iter``, ``'step'`` keeps it whole until then and zero after; the loss keeps running
    at weight 0 (its adapters get zero gradients, which DDP accepts). Like mmrazor's StopDistillHook, but per
    section and by iteration; the factor follows the restored iteration on resume. ``until_iter=None`` is the
    end of training (the loop's ``max_iters``), so one config ramps over ``bench-kd --quick``'s or ``--iters``'
    shortened schedule as over the full one.
    """

    priority = "VERY_HIGH"

    def __init__(self, section: str, until_iter: int | None = None, decay: str = "linear") -> None:
        if section not in LOSS_SECTIONS:
            raise ConfigError(f"LossWeightScheduleHook.section must be one of {tuple(LOSS_SECTIONS)}, got {section!r}")
        if until_iter is not None and until_iter < 1:
            raise ConfigError(f"LossWeightScheduleHook.until_iter must be >= 1, got {until_iter}")
        if decay not in DECAYS:
            raise ConfigError(f"LossWeightScheduleHook.decay must be one of {DECAYS}, got {decay!r}")
        self.section, self.until_iter, self.decay = section, until_iter, decay
        self.end = until_iter  # resolved against the loop in before_train when None
        self.base_weight: float | None = None

    def factor(self, it: int) -> float:
        """The share of the configured weight at (0-based) iteration ``it``."""
        if self.decay == "step":
            return 1.0 if it < self.end else 0.0
        return max(0.0, 1.0 - it / self.end)

    def before_train(self, runner) -> None:
        if self.until_iter is None:
            self.end = runner.max_iters
        # bench-kd's entries keep the distill config's hooks: the student alone has no sections and a component
        # alone has the others switched off; neither has anything to schedule, which the log says
        cfg = getattr(unwrap(runner.model), LOSS_SECTIONS[self.section], None)
        self.base_weight = cfg.weight if cfg is not None and cfg.enable else None
        if self.base_weight is None:
            runner.logger.warning(f"LossWeightScheduleHook: no enabled {self.section} loss in this model; "
                                  "the hook does nothing")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.base_weight is not None:
            cfg = getattr(unwrap(runner.model), LOSS_SECTIONS[self.section])
            cfg.weight = self.base_weight * self.factor(runner.iter)
