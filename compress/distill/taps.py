"""One forward pass of an mmdet DETR-family detector that keeps what the distillation losses need.

This is the only module that walks mmdet's detector internals. It calls the same steps as
``DetectionTransformer.forward_transformer`` (extract_feat -> pre_transformer -> forward_encoder ->
pre_decoder -> forward_decoder) and the head's forward once, so nothing is computed twice and every
intermediate is kept. Verified families: DETR, Deformable DETR (plain, box refinement, two-stage),
Conditional DETR, DAB-DETR, DINO (see ``shared notes/mmdet-integration.md``).

Shapes: B batch, L decoder stages, N queries, E embed dims, C classes, S encoder tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from mmdet.models.dense_heads import DeformableDETRHead
from mmdet.models.detectors import DINO

# The decoder inputs that carry a query group; everything else (memory, masks, spatial shapes) is shared
# by every group decoded on the same encoder output.
QUERY_KEYS = ("query", "query_pos", "reference_points")


@dataclass
class Taps:
    """What a detector's forward exposes to the losses.

    feats: neck outputs, per level (B, E, H, W).
    memory: encoder output (B, S, E), tokens level-major in ``feats`` order.
    decoder_inputs: keyword arguments of the detector's ``forward_decoder`` for its own queries.
    head_inputs: ``forward_decoder`` outputs plus ``pre_decoder``'s extras (encoder proposals, dn_meta).
    cls_scores: (L, B, N, C) sigmoid logits, or (L, B, N, C + 1) softmax logits (DETR).
    bbox_preds: (L, B, N, 4) normalised cxcywh.
    num_dn: leading denoising queries in N (DINO training), excluded from distillation.
    backbone_feats: the backbone outputs the neck maps to ``feats``, level for level (B, C_i, H, W).
    """

    feats: tuple[torch.Tensor, ...]
    memory: torch.Tensor
    decoder_inputs: dict
    head_inputs: dict
    cls_scores: torch.Tensor
    bbox_preds: torch.Tensor
    num_dn: int = 0
    extras: dict = field(default_factory=dict)
    backbone_feats: tuple[torch.Tensor, ...] = ()

    def float(self) -> Taps:
        """Every floating-point tensor in float32: a teacher run under bf16/fp16 autocast feeds the losses,
        which match, clamp and take IoUs in float32 like the student's own outputs."""
        def cast(value):
            if isinstance(value, torch.Tensor):
                return value.float() if value.is_floating_point() else value
            if isinstance(value, dict):
                return {k: cast(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(cast(v) for v in value)
            return value

        return Taps(**{f.name: cast(getattr(self, f.name)) for f in fields(self)})

    def encoder_maps(self) -> list[torch.Tensor]:
        """The encoder output reshaped per level to (B, E, H, W) like ``feats``."""
        maps, start = [], 0
        for f in self.feats:
            h, w = f.shape[-2:]
            tokens = self.memory[:, start:start + h * w]
            maps.append(tokens.transpose(1, 2).reshape(f.shape[0], -1, h, w))
            start += h * w
        return maps


def is_softmax_head(head) -> bool:
    """DETR's head classifies with a softmax over C + 1 classes; all others use per-class sigmoids."""
    return not getattr(head.loss_cls, "use_sigmoid", False)


def head_forward(model, head_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the head once on decoder outputs; returns (cls_scores, bbox_preds) stacked over stages."""
    args = {k: head_inputs[k] for k in ("hidden_states", "references") if k in head_inputs}
    cls_scores, bbox_preds = model.bbox_head(**args)
    return cls_scores, bbox_preds


def forward_taps(model, inputs: torch.Tensor, data_samples: list, group: dict | None = None) -> Taps:
    """The detector's transformer forward, keeping every intermediate (grad follows the caller's mode).

    ``group`` (``QUERY_KEYS`` -> tensors, e.g. the teacher's queries for query-prior distillation) is decoded
    on the same encoder output; its (cls_scores, bbox_preds) land in ``extras["group"]``. DINO decodes it in
    the same decoder call as its own queries (``decode_with_group``); other families in a second call.
    """
    backbone_feats = model.backbone(inputs)  # extract_feat's two steps, keeping the backbone's outputs
    feats = model.neck(backbone_feats) if model.with_neck else backbone_feats
    encoder_inputs, decoder_inputs = model.pre_transformer(feats, data_samples)
    encoder_outputs = model.forward_encoder(**encoder_inputs)
    if isinstance(model, DINO):
        query_inputs, head_inputs = model.pre_decoder(**encoder_outputs, batch_data_samples=data_samples)
    else:
        query_inputs, head_inputs = model.pre_decoder(**encoder_outputs)
    decoder_inputs.update(query_inputs)
    extras = {}
    if group is not None and isinstance(model, DINO):
        decoded, (cls_scores, bbox_preds), extras["group"] = decode_with_group(model, decoder_inputs, group)
        head_inputs.update(decoded)
    else:
        head_inputs.update(model.forward_decoder(**decoder_inputs))
        cls_scores, bbox_preds = head_forward(model, head_inputs)
        if group is not None:
            extras["group"] = decode_query_group(model, decoder_inputs, group)
    dn_meta = head_inputs.get("dn_meta")
    num_dn = int(dn_meta["num_denoising_queries"]) if dn_meta else 0
    return Taps(feats=tuple(feats), memory=encoder_outputs["memory"], decoder_inputs=decoder_inputs,
                head_inputs=head_inputs, cls_scores=cls_scores, bbox_preds=bbox_preds, num_dn=num_dn,
                extras=extras, backbone_feats=tuple(backbone_feats))


def decode_with_group(model, decoder_inputs: dict, group: dict) -> tuple[dict, tuple, tuple]:
    """One DINO decoder call for the model's own queries and ``group`` side by side.

    A block-diagonal self-attention mask keeps the two apart (cross-attention and box refinement are per
    query), so each side gets exactly what a decoder call of its own would give, for one call's op overhead.
    Returns the own queries' decoder outputs, their (cls_scores, bbox_preds) and the group's.
    """
    num_own = decoder_inputs["query"].shape[1]
    merged = dict(decoder_inputs)
    for key in ("query", "reference_points"):
        merged[key] = torch.cat([decoder_inputs[key], group[key].to(decoder_inputs[key].dtype)], dim=1)
    total = merged["query"].shape[1]
    mask = torch.ones(total, total, dtype=torch.bool, device=merged["query"].device)  # True: may not attend
    mask[num_own:, num_own:] = False
    own_mask = decoder_inputs.get("dn_mask")
    mask[:num_own, :num_own] = own_mask if own_mask is not None else False
    merged["dn_mask"] = mask
    decoded = model.forward_decoder(**merged)
    cls_scores, bbox_preds = head_forward(model, decoded)
    own = {"hidden_states": decoded["hidden_states"][:, :, :num_own],
           "references": [r[:, :num_own] for r in decoded["references"]]}
    return (own, (cls_scores[:, :, :num_own], bbox_preds[:, :, :num_own]),
            (cls_scores[:, :, num_own:], bbox_preds[:, :, num_own:]))


def detection_loss(model, taps: Taps, batch_gt_instances: list, batch_img_metas: list[dict]) -> dict:
    """The detector's own loss from the kept head outputs (equals ``model.loss`` without a second forward)."""
    head = model.bbox_head
    args: list = [taps.cls_scores, taps.bbox_preds]
    if isinstance(head, DeformableDETRHead):  # Deformable and DINO heads take the encoder proposals
        args += [taps.head_inputs.get("enc_outputs_class"), taps.head_inputs.get("enc_outputs_coord")]
    args += [batch_gt_instances, batch_img_metas]
    if "dn_meta" in taps.head_inputs:
        args.append(taps.head_inputs["dn_meta"])
    return head.loss_by_feat(*args)


def encode_again_and_decode_group(model, taps: Taps, data_samples: list, group: dict
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The official code's teacher-group pass (its head's ``forward_train_teacher_group``): the student's
    encoder runs a second time on the neck features of the shared backbone pass, its decoder on the group
    alone. It is the baseline the one-pass step's speed-up is quoted against, so it does no more than the
    official code: no second backbone pass, the own and denoising queries not decoded again."""
    encoder_inputs, _ = model.pre_transformer(list(taps.feats), data_samples)
    memory = model.forward_encoder(**encoder_inputs)["memory"]
    return decode_query_group(model, {**taps.decoder_inputs, "memory": memory}, group)


def decode_query_group(model, decoder_inputs: dict, group: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an extra query group in a decoder call of its own, on the encoder output that
    ``decoder_inputs`` carries; returns its (cls_scores, bbox_preds). The encoder is not run again."""
    decoder_inputs = dict(decoder_inputs)
    decoder_inputs.update({k: v for k, v in group.items() if k in decoder_inputs})
    if "dn_mask" in decoder_inputs:
        decoder_inputs["dn_mask"] = None
    return head_forward(model, model.forward_decoder(**decoder_inputs))
