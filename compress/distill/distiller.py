"""DETRDistiller: a frozen teacher and a trainable student, as one mmengine model.

``loss()`` reads top to bottom: teacher forward (no grad) -> student forward -> student detection loss ->
the three DETRDistill losses, each switchable and weighted from the config, every term logged under its
own key (``loss_lkd_{cls,l1,giou}_s{k}``, ``loss_fkd_t{k}``, ``loss_qp_{cls,bbox,iou}_s{k}``; the official release's
optional contrastive term ``loss_ckd_s{k}``).

The teacher is held outside the module tree on purpose: it is then absent from ``state_dict`` (checkpoints
hold only the student and the adapters), from ``parameters()`` (the optimizer and DDP never see it) and
from ``train()`` (it stays in eval mode, so no dropout and no DINO denoising queries). ``_apply`` moves
it with the student.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope

from compress.checkpoints import load_state_dict_file
from compress.distill.box_ops import cxcywh_to_xyxy
from compress.distill.gt_assignment import stage_targets
from compress.distill.losses.contrastive_kd import ContrastiveHead, ContrastiveKDConfig
from compress.distill.losses.feature_kd import (
    FeatureKDConfig,
    box_masks,
    channel_standardised,
    feature_adapter,
    gather_rows,
    masked_feature_loss,
    quality_masks,
    query_evidence,
    select_queries,
)
from compress.distill.losses.fitnet import fitnet_loss
from compress.distill.losses.logits_kd import LogitsKDConfig, StageMatch, logits_kd_loss, match_stages, query_match
from compress.distill.losses.mgd import MGDGenerator, mgd_loss
from compress.distill.losses.query_prior_kd import QueryPriorConfig, loss_under_assignment
from compress.distill.stage_pairing import assignment_stage, group_stages
from compress.distill.taps import (
    QUERY_KEYS,
    Taps,
    detection_loss,
    encode_again_and_decode_group,
    forward_taps,
    is_softmax_head,
)
from compress.distill.teacher_cache import ALWAYS, TeacherCache, image_key
from compress.distill.teacher_precision import (
    LowPrecisionWeights,
    autocast_dtype,
    float32_sampling,
    float32_self_attention,
)
from compress.errors import CheckpointError, ConfigError
from compress.models.sparse_deformable_attention import sparse_deformable_sampling


@contextlib.contextmanager
def own_random_stream():
    """Draw from a CPU stream of our own, leaving the global one where the student's construction left it.

    Seed for seed, the student then gets the initial weights (``init_weights`` runs after construction) and
    the training draws (DINO's denoising queries) of the student trained alone: bench-kd's entries differ
    from their baseline by the losses only, not by a second sample of the student's weights, which
    otherwise follows from the teacher's construction consuming numbers before the student is initialised.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(torch.initial_seed() + 1)
        yield


def _section(cls, value: dict | None, name: str):
    """Build a loss config dataclass, refusing unknown keys with the list of valid ones."""
    value = dict(value or {})
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in model.{name}; valid keys: {sorted(valid)}")
    try:
        return cls(**value)
    except ValueError as exc:
        raise ConfigError(f"model.{name}: {exc}") from None


def _switch(spec: dict, key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"model.teacher.{key} must be True or False, got {value!r}")
    return value


def compile_encoder(detector: nn.Module) -> None:
    """torch.compile the teacher's transformer encoder, where its no-grad forward spends its time.

    Measured on the default teacher (2 CPU cores, batch 4, 192 px): encoder 122 of 170 ms; compiled, the whole
    forward 178 -> 134 ms (same outputs within 5e-6): inductor fuses the elementwise work around the matrix
    products. The decoder gained nothing and is left eager. The first step pays the compilation (about 25 s
    cold, seconds from inductor's on-disk cache); ``dynamic=None`` recompiles once with dynamic shapes when
    the input size changes (multi-scale training) instead of once per size."""
    encoder = getattr(detector, "encoder", None)
    if encoder is None:
        raise ConfigError(f"model.teacher.compile: {type(detector).__name__} has no transformer encoder to compile")
    encoder.compile(dynamic=None)


def build_detector(spec: dict, role: str) -> nn.Module:
    """Build an mmdet detector from ``dict(config=path | model dict)``."""
    if not isinstance(spec, dict) or "config" not in spec:
        raise ConfigError(f"model.{role} must be dict(config=<detector config path or model dict>, ...)")
    valid = {"config", "checkpoint"} | ({"autocast", "sparse_attention", "compile", "cache_mb"} if role == "teacher"
                                        else set())
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in model.{role}; valid keys: {sorted(valid)}")
    with DefaultScope.overwrite_default_scope("mmdet"):  # nested parts (data preprocessor) resolve in mmdet
        return MODELS.build(detector_model_cfg(spec["config"], role))


def detector_model_cfg(source: str | Path | dict | Config, role: str) -> dict:
    """The model dict that ``model.<role>.config`` names: a config file's ``model``, or a copy of a model dict
    (mmdet's detectors write into the dict they are built from)."""
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ConfigError(f"model.{role}.config file not found: {source}; paths are relative to the "
                              f"working directory (run from the repository root)")
        return Config.fromfile(str(source)).model.to_dict()
    return copy.deepcopy(source.to_dict() if isinstance(source, Config) else dict(source))


def load_detector_weights(model: nn.Module, path: str, role: str) -> None:
    fix = (f"train it with `make teacher` or set model.{role}.checkpoint" if role == "teacher"
           else f"fix model.{role}.checkpoint")
    state = load_state_dict_file(path, what=f"{role} checkpoint", fix=fix)
    if any(k.startswith("student.") for k in state):  # a distiller checkpoint: take its student
        state = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise CheckpointError(f"{role} checkpoint {path} does not fit the {role} config: {first}; "
                              f"point model.{role}.config at the config it was trained with") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{role} checkpoint {path} does not fit the {role} config: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected (e.g. "
            f"{result.unexpected_keys[:2]}); point model.{role}.config at the config it was trained with")


def _clamped_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0y0x1y1 = cxcywh_to_xyxy(boxes).clamp(0, 1)
    return torch.cat([(x0y0x1y1[..., :2] + x0y0x1y1[..., 2:]) / 2, x0y0x1y1[..., 2:] - x0y0x1y1[..., :2]], -1)


def class_logits(cls_scores: torch.Tensor, softmax: bool) -> torch.Tensor:
    """Per-class sigmoid logits; a softmax head's foreground probabilities are mapped to logits."""
    if not softmax:
        return cls_scores
    return torch.logit(cls_scores.softmax(-1)[..., :-1], eps=1e-6)


def backbone_channels(detector: nn.Module) -> list[int]:
    """The channels of each backbone output, read where the neck takes them in (mmdet's ChannelMapper, the
    neck of every DETR family here): the backbones themselves do not record them per output."""
    convs = getattr(getattr(detector, "neck", None), "convs", None)
    if convs is None:
        raise ConfigError("feature_kd.source='backbone' needs a ChannelMapper neck (it reads the backbone's "
                          "channels from it); use source='neck'")
    return [module.conv.in_channels for module in convs]


@MODELS.register_module()
class DETRDistiller(BaseModel):
    """DETRDistill (Chang et al., ICCV 2023) around two mmdet DETR-family detectors.

    Args:
        teacher: dict(config=<path or model dict>, checkpoint=<path>, autocast=None | 'bfloat16' | 'float16');
            frozen, eval mode, no grad. ``autocast`` runs its forward under torch.autocast in that dtype
            (cheaper on hardware with bf16/fp16 units: AVX-512 BF16 / AMX CPUs, tensor-core GPUs), deformable
            attention's sampling and the query self-attention in float32 (``teacher_precision.py``); its
            outputs are cast back to float32 before matching and the losses; its linear and convolution
            weights are cast once, not on every forward (``LowPrecisionWeights``). ``sparse_attention`` (default
            True): deformable attention's CPU fallback runs as one sparse matrix product in the teacher's
            no-grad forward (same result, see ``compress/models/sparse_deformable_attention.py``); False keeps
            mmcv's grid_sample version, for timing comparisons. ``compile`` (default False): torch.compile
            the teacher's encoder (see ``compile_encoder``). ``cache_mb`` (default 0, off): keep the teacher's
            outputs per image, up to that many MB of CPU memory, so an image seen again skips the teacher
            (exact: the key hashes the image tensor itself; see ``teacher_cache.py``; the hit rate is logged
            as ``teacher_cache_hit_rate``).
        student: dict(config=<path or model dict>, checkpoint=<optional init path>).
        logits_kd / feature_kd / query_prior / contrastive_kd: loss sections (see the dataclasses in
            ``losses/``); each has ``enable`` and ``weight``. ``contrastive_kd`` (off by default) is the
            official release's extra InfoNCE between matched query embeddings. ``logits_kd.points=
            'teacher_queries'`` runs the teacher-query group through the student even with the query prior off.
    """

    def __init__(self, teacher: dict, student: dict, logits_kd: dict | None = None,
                 feature_kd: dict | None = None, query_prior: dict | None = None,
                 contrastive_kd: dict | None = None, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        self.logits_cfg = _section(LogitsKDConfig, logits_kd, "logits_kd")
        self.feature_cfg = _section(FeatureKDConfig, feature_kd, "feature_kd")
        self.query_cfg = _section(QueryPriorConfig, query_prior, "query_prior")
        self.contrast_cfg = _section(ContrastiveKDConfig, contrastive_kd, "contrastive_kd")
        student_model = build_detector(student, "student")
        super().__init__(data_preprocessor=data_preprocessor or student_model.data_preprocessor,
                         init_cfg=init_cfg)
        self.student = student_model
        self.student_checkpoint = student.get("checkpoint")
        if self.student_checkpoint:
            load_detector_weights(self.student, self.student_checkpoint, "student")

        with own_random_stream():
            self._build_around_student(teacher)

    def _build_around_student(self, teacher: dict) -> None:
        """The teacher and the distiller's own modules (projection, adapters, heads, generators)."""
        self.teacher_autocast = autocast_dtype(teacher.get("autocast"))
        self.teacher_sparse_attention = _switch(teacher, "sparse_attention", True)
        teacher_compile = _switch(teacher, "compile", False)
        cache_mb = teacher.get("cache_mb", 0)
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, (int, float)) or cache_mb < 0:
            raise ConfigError(f"model.teacher.cache_mb must be a number of megabytes >= 0 (0: no cache), "
                              f"got {cache_mb!r}")
        if not teacher.get("checkpoint"):
            raise ConfigError("model.teacher.checkpoint is not set; train a teacher with `make teacher` "
                              "or point it at a trained checkpoint")
        teacher_model = build_detector(teacher, "teacher")
        load_detector_weights(teacher_model, teacher["checkpoint"], "teacher")
        teacher_model.requires_grad_(False).eval()
        self.teacher_weights = None
        if self.teacher_autocast is not None:
            float32_self_attention(teacher_model)
            self.teacher_weights = LowPrecisionWeights(teacher_model, self.teacher_autocast)
        if teacher_compile:
            compile_encoder(teacher_model)
        object.__setattr__(self, "teacher", teacher_model)  # outside the module tree, see module doc
        self._check_pair()

        t_head, s_head = self.teacher.bbox_head, self.student.bbox_head
        self.t_softmax, self.s_softmax = is_softmax_head(t_head), is_softmax_head(s_head)
        t_dims = self.teacher.embed_dims
        s_dims = self.student.embed_dims
        # A query group of width E_t entering a student of width E_s needs a projection; bias-free so
        # all-zero content queries (DETR, Conditional, DAB) stay zero.
        self.query_proj = (nn.Linear(t_dims, s_dims, bias=False)
                           if self._needs_query_group() and t_dims != s_dims else None)
        self.feature_adapters = None
        self.feature_levels = []
        if self.feature_cfg.enable:
            if self.feature_cfg.source == "backbone":  # one level fewer than the neck, which makes the coarsest
                t_chs, s_chs = backbone_channels(self.teacher), backbone_channels(self.student)
                self.feature_levels = self._feature_levels(min(len(t_chs), len(s_chs)), "the backbones do not put out")
                pairs = [(t_chs[i], s_chs[i]) for i in self.feature_levels]
            else:  # neck outputs and encoder memory both have embed_dims channels
                self.feature_levels = self._feature_levels(getattr(self.student, "num_feature_levels", 1),
                                                           "the student does not have")
                pairs = [(t_dims, s_dims)] * len(self.feature_levels)
            self.feature_adapters = nn.ModuleList(
                [feature_adapter(s_ch, t_ch, self.feature_cfg.adapter) for t_ch, s_ch in pairs])
        self.contrast_head = (ContrastiveHead(s_dims, t_dims, self.contrast_cfg.proj_dims)
                              if self.contrast_cfg.enable else None)
        self.mgd_generators = None
        if self.feature_cfg.enable and self.feature_cfg.method == "mgd":
            self.mgd_generators = nn.ModuleList([MGDGenerator(t_dims) for _ in self.feature_levels])
        self.teacher_cache = (TeacherCache(int(cache_mb * 2**20), *self._cached_fields()) if cache_mb else None)

    def _cached_fields(self) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
        """What the enabled losses read of the teacher: its predictions, decoder embeddings and queries always
        (small), feature maps only where feature KD reads them (most of a record's bytes), and of those only
        the distilled levels' values (the encoder memory's split per level reads the neck maps' sizes alone)."""
        source = self.feature_cfg.source if self.feature_cfg.enable else None
        levels = tuple(self.feature_levels)
        # per source: the map fields it reads, each with the levels whose values are kept (None: the whole field)
        maps = {"neck": {"feats": levels}, "encoder": {"feats": (), "memory": None},
                "backbone": {"backbone_feats": levels}}.get(source, {})
        return ALWAYS + tuple(maps), {name: kept for name, kept in maps.items() if kept is not None}

    # -- construction checks -------------------------------------------------------------------------
    def _check_pair(self) -> None:
        t_classes = self.teacher.bbox_head.num_classes
        s_classes = self.student.bbox_head.num_classes
        if t_classes != s_classes:
            raise ConfigError(f"teacher has {t_classes} classes but student has {s_classes}; distillation "
                              f"needs one label space: set bbox_head.num_classes equal in both configs")
        t_pre, s_pre = self.teacher.data_preprocessor, self.data_preprocessor
        for attr in ("mean", "std"):
            a, b = getattr(t_pre, attr, None), getattr(s_pre, attr, None)
            if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b)):
                raise ConfigError(f"teacher and student data_preprocessor.{attr} differ; both models see the "
                                  f"same normalised batch, so set them equal")
        if self._needs_teacher_assignment() and getattr(self.teacher.bbox_head, "assigner", None) is None:
            raise ConfigError("the teacher config has no train_cfg.assigner, which query_prior and "
                              "logits_kd.mode='split' need (the teacher's own assignment)")

    def _needs_teacher_assignment(self) -> bool:
        """The teacher's own GT assignment feeds the query prior and the split mode's positives."""
        return self.query_cfg.enable or (self.logits_cfg.mode == "split" and
                                         (self.logits_cfg.enable or self.contrast_cfg.enable))

    def _query_points(self) -> bool:
        """Whether logits KD distils on the teacher-query group (``points='teacher_queries'``)."""
        return self.logits_cfg.enable and self.logits_cfg.points == "teacher_queries"

    def _needs_query_group(self) -> bool:
        """The teacher's queries go through the student's decoder for the query prior and for logits KD on
        the teacher's queries."""
        return self.query_cfg.enable or self._query_points()

    def _feature_levels(self, available: int, missing: str) -> list[int]:
        """The distilled levels of ``available`` (None: all). For neck and encoder memory that is the student's
        num_feature_levels (Deformable DETR and DINO carry it; DETR, Conditional and DAB-DETR run on one level).
        Not read from the neck: mmdet's ChannelMapper keeps no num_outs attribute, and counting on it built one
        adapter, so until 2026-11-27 feature KD saw only the finest level, whatever the config said (now
        ``feature_kd.levels=[0]``)."""
        levels = self.feature_cfg.levels
        if levels is None:
            return list(range(available))
        if max(levels) >= available:
            raise ConfigError(f"feature_kd.levels {levels} names a level {missing}: there are {available} "
                              f"(indices 0-{available - 1})")
        return levels

    def init_weights(self) -> None:
        """mmdet's DETR initialisation for the student; the Runner calls this after __init__, so a student
        init checkpoint is loaded again afterwards instead of being overwritten."""
        super().init_weights()
        if self.student_checkpoint:
            load_detector_weights(self.student, self.student_checkpoint, "student")

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        if self.teacher_weights is not None:
            self.teacher_weights.reset()  # the low-precision copies follow the teacher's new device / values
        return self

    def _set_device(self, device: torch.device) -> None:
        """``BaseModel.to`` / ``.cuda()`` tell every data preprocessor in the module tree its device; the
        teacher's (used when the teacher is evaluated on its own) sits outside the tree and must be told too,
        or its inputs stay on the CPU while its mean / std buffers moved to the GPU."""
        super()._set_device(device)
        self.teacher._set_device(device)

    # -- mmengine model interface --------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.student.predict(inputs, data_samples)
        return self.student._forward(inputs, data_samples)

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict[str, torch.Tensor]:
        teacher = self._teacher_forward(inputs, data_samples)
        # The teacher's queries ride along in the student's own forward (one encoder pass, and for DINO one
        # decoder call); the official-style step (encoder_twice) re-runs the student's encoder for them.
        group = self._query_group(teacher) if self._needs_query_group() else None
        twice = self.query_cfg.encoder_twice
        student = forward_taps(self.student, inputs, data_samples, group=None if twice else group)
        gts = [s.gt_instances for s in data_samples]
        metas = [s.metainfo for s in data_samples]
        losses = detection_loss(self.student, student, gts, metas)

        num_t, num_s = teacher.cls_scores.shape[0], student.cls_scores.shape[0]
        targets = self._teacher_targets(teacher, gts, metas) if self._needs_teacher_assignment() else {}
        groups = group_stages(num_t, num_s)
        decoded = None
        if group is not None:
            decoded = (encode_again_and_decode_group(self.student, student, data_samples, group) if twice
                       else student.extras["group"])
        matched = None
        if (self.logits_cfg.enable and not self._query_points()) or self.contrast_cfg.enable:
            matched = self._match_stages(teacher, student, targets, groups)
        if self.logits_cfg.enable:
            losses.update(self._logits_kd(self._query_pairs(teacher, decoded, targets, groups)
                                          if self._query_points() else matched))
        if self.contrast_cfg.enable:
            losses.update(self._contrastive_kd(teacher, student, matched))
        if self.feature_cfg.enable:
            losses.update(self._feature_kd(teacher, student, gts, metas))
        if self.query_cfg.enable:
            losses.update(self._query_prior(decoded, targets, metas, assignment_stage(num_t, num_s)))
        if self.teacher_cache is not None:  # logged beside the losses (no "loss" in the key: not summed)
            losses["teacher_cache_hit_rate"] = torch.tensor(self.teacher_cache.hit_rate, device=inputs.device)
        return losses

    def _teacher_forward(self, inputs: torch.Tensor, data_samples: list) -> Taps:
        """The teacher's outputs for the batch; with ``teacher.cache_mb`` its images seen before are read from
        the cache and only the others go through the teacher (``teacher_cache.py``)."""
        cache = self.teacher_cache
        if cache is None:
            return self._run_teacher(inputs, data_samples)
        keys = [image_key(image, sample.metainfo) for image, sample in zip(inputs, data_samples)]
        found = cache.lookup(keys)
        missing = [i for i, record in enumerate(found) if record is None]
        if not missing:
            return cache.assemble(found, inputs.device)
        taps = self._run_teacher(inputs[missing], [data_samples[i] for i in missing])
        for i, record in zip(missing, cache.records(taps)):
            found[i] = record
            cache.keep(keys[i], record)
        # a batch with no hit already has its outputs in batch order: no restacking on the first epoch's path
        return taps if len(missing) == len(found) else cache.assemble(found, inputs.device)

    def _run_teacher(self, inputs: torch.Tensor, data_samples: list) -> Taps:
        sampling = sparse_deformable_sampling() if self.teacher_sparse_attention else contextlib.nullcontext()
        with torch.no_grad(), sampling:
            if self.teacher_autocast is None:
                return forward_taps(self.teacher, inputs, data_samples)
            with (torch.autocast(inputs.device.type, dtype=self.teacher_autocast), float32_sampling(),
                  self.teacher_weights.swapped()):
                return forward_taps(self.teacher, inputs, data_samples).float()

    # -- the three losses ----------------------------------------------------------------------------
    def _teacher_targets(self, teacher: Taps, gts: list, metas: list[dict]) -> dict[int, tuple]:
        """The teacher's own Hungarian assignment to GT, per teacher stage (computed once per step)."""
        with torch.no_grad():
            return stage_targets(self.teacher.bbox_head, teacher.cls_scores, teacher.bbox_preds, gts, metas)

    def _stage_pairs(self, teacher: Taps, s_scores: torch.Tensor, s_boxes: torch.Tensor, groups: list[list[int]]
                     ) -> tuple[list[tuple[int, int, int]], list[tuple]]:
        """(s_stage, t_stage, group size) and (student logits, student boxes, teacher probs, teacher boxes) of
        every paired stage; ``s_scores`` / ``s_boxes`` (stages, B, N, .) hold the student predictions to pair."""
        keys, pairs = [], []
        for s_stage, t_stages in enumerate(groups):
            s_cls = class_logits(s_scores[s_stage], self.s_softmax)
            for t_stage in t_stages:
                t_probs = class_logits(teacher.cls_scores[t_stage], self.t_softmax).sigmoid()
                keys.append((s_stage, t_stage, len(t_stages)))
                pairs.append((s_cls, s_boxes[s_stage], t_probs, _clamped_cxcywh(teacher.bbox_preds[t_stage])))
        return keys, pairs

    def _teacher_positives(self, targets: dict, t_stage: int) -> list[torch.Tensor]:
        """Per image an (N_t,) bool of the teacher's GT-assigned predictions at ``t_stage``."""
        return [labels != self.student.bbox_head.num_classes for labels in targets[t_stage][0]]

    def _match_stages(self, teacher: Taps, student: Taps, targets: dict,
                      groups: list[list[int]]) -> list[tuple[int, int, int, tuple, StageMatch]]:
        """Every (student stage, teacher stage) pair's predictions and Hungarian matching, computed once for
        the logits KD and the contrastive term: (s_stage, t_stage, group size, predictions, match)."""
        keys, pairs = self._stage_pairs(teacher, student.cls_scores[:, :, student.num_dn:],
                                        student.bbox_preds[:, :, student.num_dn:], groups)
        positives = ([self._teacher_positives(targets, t_stage) for _, t_stage, _ in keys]
                     if self.logits_cfg.mode == "split" else None)
        matches = match_stages(pairs, self.logits_cfg, positives)
        return [(*key, predictions, match) for key, predictions, match in zip(keys, pairs, matches)]

    def _query_pairs(self, teacher: Taps, decoded: tuple[torch.Tensor, torch.Tensor], targets: dict,
                     groups: list[list[int]]) -> list[tuple[int, int, int, tuple, StageMatch]]:
        """``_match_stages`` for ``points='teacher_queries'``: the teacher group's student predictions, each
        paired with the teacher's prediction for the same query."""
        keys, pairs = self._stage_pairs(teacher, *decoded, groups)
        batch, num_queries = decoded[0].shape[1:3]
        device = decoded[0].device
        split = self.logits_cfg.mode == "split"
        return [(*key, predictions,
                 query_match(batch, num_queries, device,
                             torch.stack(self._teacher_positives(targets, key[1])) if split else None))
                for key, predictions in zip(keys, pairs)]

    def _logits_kd(self, matched: list) -> dict:
        cfg = self.logits_cfg
        out = {}
        for s_stage, _, group_size, predictions, match in matched:
            for name, value in logits_kd_loss(*predictions, cfg, match=match).items():
                key = f"loss_lkd_{name}_s{s_stage}"
                out[key] = out.get(key, 0) + cfg.weight * value / group_size
        return out

    def _contrastive_kd(self, teacher: Taps, student: Taps, matched: list) -> dict:
        """InfoNCE between each matched student query's decoder embedding and its teacher query's, per pair
        of stages (the official release's extra term, see ``losses/contrastive_kd.py``)."""
        cfg = self.contrast_cfg
        s_hidden = student.head_inputs["hidden_states"][:, :, student.num_dn:]
        t_hidden = teacher.head_inputs["hidden_states"]
        out = {}
        for s_stage, t_stage, group_size, _, match in matched:
            value = self.contrast_head(s_hidden[s_stage, match.images, match.rows],
                                       t_hidden[t_stage, match.images, match.cols], cfg.temperature)
            key = f"loss_ckd_s{s_stage}"
            out[key] = out.get(key, 0) + cfg.weight * value / group_size
        return out

    def _feature_kd(self, teacher: Taps, student: Taps, gts: list, metas: list[dict]) -> dict:
        cfg = self.feature_cfg
        if cfg.source == "neck":
            t_maps, s_maps = list(teacher.feats), list(student.feats)
        elif cfg.source == "backbone":
            t_maps, s_maps = list(teacher.backbone_feats), list(student.backbone_feats)
        else:
            t_maps, s_maps = teacher.encoder_maps(), student.encoder_maps()
        if len(t_maps) != len(s_maps) or any(a.shape[-2:] != b.shape[-2:] for a, b in zip(t_maps, s_maps)):
            raise ConfigError(f"feature_kd needs teacher and student features at the same levels and sizes, got "
                              f"{[tuple(m.shape[-2:]) for m in t_maps]} vs {[tuple(m.shape[-2:]) for m in s_maps]}; "
                              f"use the same neck num_outs and strides or disable feature_kd")
        levels = self.feature_levels
        if max(levels) >= len(s_maps):
            raise ConfigError(f"feature_kd distils levels {levels} but the student puts out {len(s_maps)}; set "
                              f"the student's num_feature_levels to its neck's num_outs")
        t_maps = [t_maps[i] for i in levels]
        s_maps = [adapter(s_maps[i]) for adapter, i in zip(self.feature_adapters, levels)]
        # The masks read the teacher's own maps (the cosine mask their directions); only the compared values
        # are standardised.
        t_cmp, s_cmp = t_maps, s_maps
        if cfg.normalize == "channel":
            t_cmp, s_cmp = [channel_standardised(m) for m in t_maps], [channel_standardised(m) for m in s_maps]
        if cfg.method == "fitnet":
            return {"loss_fkd_fitnet": cfg.weight * fitnet_loss(t_cmp, s_cmp)}
        if cfg.method == "mgd":
            return {"loss_fkd_mgd": cfg.weight * mgd_loss(t_cmp, s_cmp, self.mgd_generators, cfg.mgd_mask_ratio)}
        with torch.no_grad():
            masks = self._quality_masks(teacher, t_maps, gts, metas)
        values = cfg.weight * masked_feature_loss(t_cmp, s_cmp, masks)
        return {f"loss_fkd_t{stage}": value for stage, value in enumerate(values)}

    def _quality_masks(self, teacher: Taps, t_maps: list[torch.Tensor], gts: list, metas: list[dict]
                       ) -> list[torch.Tensor]:
        """psi (K, B, H, W) per level: one mask per teacher decoder stage, built together."""
        cfg = self.feature_cfg
        probs = class_logits(teacher.cls_scores, self.t_softmax).sigmoid()  # (K, B, N, C)
        hidden = teacher.head_inputs["hidden_states"]  # (K, B, N, E)
        boxes, quality, evidence = [], [], []
        for b, (gt, meta) in enumerate(zip(gts, metas)):  # all stages of an image at once
            h, w = meta["img_shape"]
            pixels = cxcywh_to_xyxy(teacher.bbox_preds[:, b]) * probs.new_tensor([w, h, w, h])
            query, q = select_queries(probs[:, b], pixels, gt.bboxes.to(probs.device).float(), cfg.top_m)
            quality.append(q)
            if cfg.mask == "boxes":
                boxes.append(gather_rows(pixels, query))
            else:
                evidence.append(query_evidence(gather_rows(hidden[:, b], query), q))
        if cfg.mask == "boxes":  # the maps cover the padded batch input, as the boxes' pixels do
            sizes = [tuple(m.shape[-2:]) for m in t_maps]
            return box_masks(torch.stack(boxes, 1), torch.stack(quality, 1), metas[0]["batch_input_shape"], sizes,
                             cfg.min_mask)
        return quality_masks(torch.stack(evidence, 1), t_maps, cfg.min_mask)

    def _query_group(self, teacher: Taps) -> dict[str, torch.Tensor]:
        """The teacher's detached decoder queries, projected to the student's width where they differ."""
        group = {}
        for key in QUERY_KEYS:
            value = teacher.decoder_inputs.get(key)
            if value is None:
                continue
            value = value.detach()
            if self.query_proj is not None and value.shape[-1] == self.teacher.embed_dims:
                value = self.query_proj(value)
            group[key] = value
        return group

    def _query_prior(self, decoded: tuple[torch.Tensor, torch.Tensor], targets: dict, metas: list[dict],
                     stage_of: list[int]) -> dict:
        cls_scores, bbox_preds = decoded
        out = {}
        for s_stage, t_stage in enumerate(stage_of):
            terms = loss_under_assignment(self.student.bbox_head, cls_scores[s_stage], bbox_preds[s_stage],
                                          targets[t_stage], metas)
            for name, value in terms.items():
                out[f"loss_qp_{name}_s{s_stage}"] = self.query_cfg.weight * value
        return out
