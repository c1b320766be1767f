"""Target-aware feature distillation: query selection, quality mask and masked loss by hand."""

from __future__ import annotations

import math

import pytest
import torch

from compress.distill.losses.feature_kd import (
    box_masks,
    channel_standardised,
    masked_feature_loss,
    quality_mask,
    quality_masks,
    query_evidence,
    select_queries,
    weight_in_boxes,
)
from compress.distill.losses.fitnet import fitnet_loss
from compress.errors import ConfigError
from tests.distill_helpers import build_distiller, make_batch, run_steps
from tests.tiny import tiny_model


def feature_kd_inputs(distiller):
    """(teacher taps, student taps, GTs, metas) of one two-image batch: what ``_feature_kd`` reads."""
    from compress.distill.taps import forward_taps

    data = distiller.data_preprocessor(make_batch(2, 96, seed=0), True)
    teacher = distiller._teacher_forward(data["inputs"], data["data_samples"])
    student = forward_taps(distiller.student, data["inputs"], data["data_samples"])
    return (teacher, student, [s.gt_instances for s in data["data_samples"]],
            [s.metainfo for s in data["data_samples"]])


def test_quality_mask_hand_computed():
    feature = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (E=2, H=1, W=2): pixel 0 along x, pixel 1 along y
    queries = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    quality = torch.tensor([0.5, 0.2])
    psi00 = 0.5 * 1 + 0.2 / math.sqrt(2)
    psi01 = 0.5 * 0 + 0.2 / math.sqrt(2)
    expected = torch.tensor([[1.0, psi01 / psi00]])
    torch.testing.assert_close(quality_mask(queries, quality, feature), expected)


def test_quality_mask_clamps_negative_evidence():
    feature = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    queries = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    quality = torch.tensor([0.2, 1.0])
    psi01 = 0.2 / math.sqrt(2)  # pixel 0 sums to 0.141 - 1 < 0.01: clamped to 0.01
    expected = torch.tensor([[0.01 / psi01, 1.0]])
    torch.testing.assert_close(quality_mask(queries, quality, feature), expected)


def test_select_queries_quality_is_score_times_best_iou():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.05]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [50.0, 50.0, 60.0, 60.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 60.0, 60.0]])
    query, quality = select_queries(probs, boxes, gt, top_m=3)
    assert query.tolist() == [0, 1, 2]  # scores 0.9, 0.8, 0.3
    torch.testing.assert_close(quality, torch.tensor([0.9 * 1.0, 0.8 * 0.5, 0.3 * 0.25]))
    _, quality = select_queries(probs, boxes, gt[:0], top_m=2)  # no GT: quality = score
    torch.testing.assert_close(quality, torch.tensor([0.9, 0.8]))


def test_select_queries_allows_a_query_once_per_class():
    probs = torch.tensor([[0.9, 0.8], [0.1, 0.2]])
    query, _ = select_queries(probs, torch.zeros(2, 4), torch.zeros(0, 4), top_m=2)
    assert query.tolist() == [0, 0]


def test_masked_feature_loss_hand_computed():
    f_t = [torch.ones(1, 2, 1, 2)]
    f_s = [torch.zeros(1, 2, 1, 2)]
    mask = [torch.tensor([[[1.0, 0.5]]])]
    # mean over B x C x H x W of (psi * 1)^2 = (1 + 0.25 + 1 + 0.25) / 4
    assert masked_feature_loss(f_t, f_s, mask).item() == pytest.approx(0.625)
    # one value per stage's mask (leading dim): the second mask weights only pixel 1, by 0.2^2 on both channels
    stages = [torch.tensor([[[[1.0, 0.5]]], [[[0.0, 0.2]]]])]
    torch.testing.assert_close(masked_feature_loss(f_t, f_s, stages), torch.tensor([0.625, 2 * 0.04 / 4]))


def test_batched_masks_equal_the_per_query_cosine_sum():
    """The evidence-vector form equals the definition: clamp(sum_i q_i cos(Q_i, F)), over its max."""
    torch.manual_seed(0)
    queries, quality = torch.randn(2, 7, 5), torch.rand(2, 7)
    features = [torch.randn(2, 5, 3, 4), torch.randn(2, 5, 2, 2)]
    masks = quality_masks(torch.stack([query_evidence(queries[b], quality[b]) for b in range(2)]), features)
    for level, feature in enumerate(features):
        for b in range(2):
            cos = torch.nn.functional.cosine_similarity(queries[b][:, :, None, None], feature[b][None], dim=1)
            psi = (quality[b][:, None, None] * cos).sum(0).clamp(min=0.01)
            torch.testing.assert_close(masks[level][b], psi / psi.max())


def test_box_mask_hand_computed():
    """4 x 4 input, one 2 x 2 level (cells of 2 px): quality lands on every cell a box overlaps."""
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 3.0, 3.0], [0.0, 2.0, 2.0, 4.0]]])
    quality = torch.tensor([[0.5, 0.2, 0.1]])
    # box 0 in cell (0, 0); box 1 overlaps all four; box 2 fills cell (1, 0) and only touches its neighbours
    psi = torch.tensor([[0.7, 0.2], [0.3, 0.2]])
    (mask,) = box_masks(boxes, quality, (4, 4), [(2, 2)])
    torch.testing.assert_close(mask, (psi / 0.7)[None])


def test_box_mask_clamps_cells_without_boxes():
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    (mask,) = box_masks(boxes, torch.tensor([[0.5]]), (4, 4), [(2, 2)])
    torch.testing.assert_close(mask, torch.tensor([[[1.0, 0.02], [0.02, 0.02]]]))  # 0.01 / 0.5


def test_box_masks_equal_a_per_cell_overlap_loop():
    torch.manual_seed(0)
    corners = torch.rand(2, 6, 2, 2) * torch.tensor([48.0, 32.0])
    boxes = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)  # (B, M, 4) xyxy
    quality = torch.rand(2, 6)
    sizes = [(4, 6), (2, 3), (1, 2)]
    masks = box_masks(boxes, quality, (32, 48), sizes)
    for (h, w), mask in zip(sizes, masks):
        sy, sx = 32 / h, 48 / w
        for b in range(2):
            psi = torch.zeros(h, w)
            for (x1, y1, x2, y2), q in zip(boxes[b].tolist(), quality[b].tolist()):
                for i in range(h):
                    for j in range(w):
                        if x1 < (j + 1) * sx and x2 > j * sx and y1 < (i + 1) * sy and y2 > i * sy:
                            psi[i, j] += q
            psi = psi.clamp(min=0.01)
            torch.testing.assert_close(mask[b], psi / psi.max())


def test_box_mask_trains_in_the_distiller(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4, embed_dims=32),
                                logits_kd=dict(enable=False), query_prior=dict(enable=False),
                                feature_kd=dict(mask="boxes"))
    history = run_steps(distiller, steps=2)
    keys = [k for k in history[0] if k.startswith("loss_fkd_t")]
    assert keys and all(torch.isfinite(h[k]) and h[k] > 0 for h in history for k in keys)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.feature_adapters.parameters())


@pytest.mark.parametrize("mask", ["cosine", "boxes"])
def test_only_the_cosine_mask_follows_the_query_embeddings(tmp_path, mask):
    """The box mask is drawn from the selected queries' boxes: scrambling the teacher's decoder embeddings
    leaves it unchanged and moves the official cosine mask."""
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                feature_kd=dict(mask=mask))
    data = distiller.data_preprocessor(make_batch(2, 96, seed=0), True)
    samples = data["data_samples"]
    teacher = distiller._teacher_forward(data["inputs"], samples)
    # no GT: quality = score (a random teacher's boxes miss the GT, whose IoU would zero every quality)
    gts, metas, maps = [s.gt_instances[:0] for s in samples], [s.metainfo for s in samples], list(teacher.feats)
    before = distiller._quality_masks(teacher, maps, gts, metas)
    hidden = teacher.head_inputs["hidden_states"]
    teacher.head_inputs = {**teacher.head_inputs, "hidden_states": torch.randn_like(hidden)}
    after = distiller._quality_masks(teacher, maps, gts, metas)
    assert [m.shape for m in before] == [(hidden.shape[0], *m.shape[:1], *m.shape[2:]) for m in maps]
    assert all(m.min() < 1 for m in before)  # not the all-clamped mask
    unchanged = all(torch.equal(a, b) for a, b in zip(before, after))
    assert unchanged == (mask == "boxes")


@pytest.mark.parametrize("mask", ["cosine", "boxes"])
def test_stage_batched_feature_kd_equals_the_per_stage_definition(tmp_path, mask):
    """The distiller builds every teacher stage's masks together and sums the squared error over channels once;
    the values and the gradients into the student's features equal the definition: per stage and image, the
    top-M queries, their mask, and mean((psi * (F_T - phi(F_S)))^2) per level."""
    from mmengine.structures import InstanceData

    from compress.distill.box_ops import cxcywh_to_xyxy
    from compress.distill.taps import forward_taps

    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                feature_kd=dict(mask=mask, top_m=7))
    data = distiller.data_preprocessor(make_batch(2, 96, seed=0), True)
    inputs, samples = data["inputs"], data["data_samples"]
    teacher = distiller._teacher_forward(inputs, samples)
    metas = [s.metainfo for s in samples]
    h, w = metas[1]["img_shape"]
    # image 0 without GT (quality = score); image 1 with GT on two teacher boxes (quality = score x IoU > 0)
    own = cxcywh_to_xyxy(teacher.bbox_preds[-1, 1, :2]) * torch.tensor([w, h, w, h])
    gts = [samples[0].gt_instances[:0], InstanceData(bboxes=own + 1.0, labels=torch.zeros(2, dtype=torch.long))]
    student = forward_taps(distiller.student, inputs, samples)
    losses = distiller._feature_kd(teacher, student, gts, metas)
    t_maps = list(teacher.feats)
    s_maps = [adapter(m) for adapter, m in zip(distiller.feature_adapters, student.feats)]
    probs = teacher.cls_scores.sigmoid()
    for stage in range(teacher.cls_scores.shape[0]):
        psi = [[] for _ in t_maps]
        for b, meta in enumerate(metas):
            h, w = meta["img_shape"]
            pixels = cxcywh_to_xyxy(teacher.bbox_preds[stage, b]) * torch.tensor([w, h, w, h])
            query, quality = select_queries(probs[stage, b], pixels, gts[b].bboxes.float(), 7)
            for level, t_map in enumerate(t_maps):
                if mask == "cosine":
                    hidden = teacher.head_inputs["hidden_states"][stage, b, query]
                    psi[level].append(quality_mask(hidden, quality, t_map[b]))
                else:
                    (one,) = box_masks(pixels[query][None], quality[None], meta["batch_input_shape"],
                                       [tuple(t_map.shape[-2:])])
                    psi[level].append(one[0])
        expected = sum(((torch.stack(p)[:, None] * (f_t - f_s)) ** 2).mean() for p, f_t, f_s in
                       zip(psi, t_maps, s_maps)) * distiller.feature_cfg.weight
        torch.testing.assert_close(losses[f"loss_fkd_t{stage}"], expected)
        assert any(p.min() < 1 for p in psi[0])  # not the all-clamped mask
        grads = torch.autograd.grad(losses[f"loss_fkd_t{stage}"], list(student.feats), retain_graph=True)
        expected_grads = torch.autograd.grad(expected, list(student.feats), retain_graph=True)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want)


def test_feature_levels_pick_what_is_distilled(tmp_path):
    """levels=[0]: one adapter, and only the finest student level receives the feature loss's gradient."""
    distiller = build_distiller(tmp_path, tiny_model("deformable", embed_dims=128),
                                tiny_model("deformable", embed_dims=64), feature_kd=dict(levels=[0]))
    assert len(distiller.feature_adapters) == 1
    teacher, student, gts, metas = feature_kd_inputs(distiller)
    losses = distiller._feature_kd(teacher, student, gts, metas)
    grads = torch.autograd.grad(sum(losses.values()), list(student.feats), allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert all(g is None for g in grads[1:]) and len(grads) == 4


@pytest.mark.parametrize("levels,message", [([4], "names a level the student does not have"),
                                            ([], "distinct level indices"), ([0, 0], "distinct level indices"),
                                            ([-1], "distinct level indices")])
def test_bad_feature_levels_are_refused(tmp_path, levels, message):
    with pytest.raises(ConfigError, match=message):
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        feature_kd=dict(levels=levels))


def test_unknown_feature_mask_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="feature_kd.mask must be one of"):
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        feature_kd=dict(mask="gaussian"))


def test_channel_standardised_hand_computed():
    feature = torch.tensor([[[[1.0, 3.0]], [[10.0, 10.0]]], [[[5.0, 7.0]], [[10.0, 14.0]]]])  # (B=2, C=2, 1, 2)
    out = channel_standardised(feature)
    # channel 0: 1, 3, 5, 7 -> mean 4, unbiased std sqrt(20 / 3); channel 1: 10, 10, 10, 14 -> mean 11, std 2
    std0 = math.sqrt(20 / 3)
    expected = torch.tensor([[[[-3 / std0, -1 / std0]], [[-0.5, -0.5]]], [[[1 / std0, 3 / std0]], [[-0.5, 1.5]]]])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_standardised_fitnet_is_pkd_one_minus_pearson():
    """PKD: the MSE of standardised maps is 2 (n - 1) / n (1 - r), r the per-channel Pearson correlation."""
    gen = torch.Generator().manual_seed(0)
    f_t = torch.randn(2, 3, 4, 5, generator=gen)
    f_s = 0.5 * f_t + torch.randn(2, 3, 4, 5, generator=gen)
    loss = fitnet_loss([channel_standardised(f_t)], [channel_standardised(f_s)])
    flat_t, flat_s = f_t.transpose(0, 1).flatten(1), f_s.transpose(0, 1).flatten(1)  # (C, B H W)
    n = flat_t.shape[1]
    r = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(flat_t, flat_s)])
    assert loss.item() == pytest.approx((2 * (n - 1) / n * (1 - r)).mean().item(), rel=1e-4)


@pytest.mark.parametrize("normalize,invariant", [("channel", True), ("none", False)])
def test_channel_normalised_feature_kd_ignores_the_adapters_scale(tmp_path, normalize, invariant):
    """Standardised maps compare the pattern only: scaling and shifting the adapter's output leaves the loss
    unchanged; the raw maps' loss moves with it."""
    distiller = build_distiller(tmp_path, tiny_model("deformable", embed_dims=64),
                                tiny_model("deformable", width=4, embed_dims=32),
                                feature_kd=dict(mask="boxes", levels=[0], normalize=normalize))
    distiller.eval()
    teacher, student, gts, metas = feature_kd_inputs(distiller)
    with torch.no_grad():
        before = sum(distiller._feature_kd(teacher, student, gts, metas).values())
        adapter = distiller.feature_adapters[0]
        adapter.weight.mul_(3.0)
        adapter.bias.mul_(3.0).add_(0.7)
        after = sum(distiller._feature_kd(teacher, student, gts, metas).values())
    assert before > 0
    assert (after.item() == pytest.approx(before.item(), rel=1e-4)) == invariant


def test_backbone_source_distils_the_backbone_output_the_neck_reads(tmp_path):
    """source='backbone', level 0: the loss's gradient reaches the student's finest backbone output, its
    adapter maps the student's channels to the teacher's, and the neck's output gets no gradient of its own."""
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                feature_kd=dict(source="backbone", mask="boxes", levels=[0]))
    teacher, student, gts, metas = feature_kd_inputs(distiller)
    t_in, s_in = teacher.backbone_feats[0].shape[1], student.backbone_feats[0].shape[1]
    assert s_in != t_in and len(teacher.backbone_feats) < len(teacher.feats)
    adapter = distiller.feature_adapters[0]
    assert (adapter.in_channels, adapter.out_channels) == (s_in, t_in)
    loss = sum(distiller._feature_kd(teacher, student, gts, metas).values())
    grads = torch.autograd.grad(loss, [*student.backbone_feats, student.feats[0]], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert all(g is None for g in grads[1:])


def test_backbone_source_without_levels_takes_every_backbone_output(tmp_path):
    """levels=None means every level, and the backbone puts out one fewer than the neck (its extra level is
    made by the neck): one loss term per backbone output, adapters sized from each."""
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                feature_kd=dict(source="backbone", mask="boxes", levels=None))
    teacher, student, gts, metas = feature_kd_inputs(distiller)
    assert distiller.feature_levels == list(range(len(teacher.backbone_feats))) != []
    assert len(teacher.backbone_feats) < len(teacher.feats)
    assert [(a.in_channels, a.out_channels) for a in distiller.feature_adapters] == [
        (s.shape[1], t.shape[1]) for s, t in zip(student.backbone_feats, teacher.backbone_feats)]
    loss = sum(distiller._feature_kd(teacher, student, gts, metas).values())
    grads = torch.autograd.grad(loss, list(student.backbone_feats))
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("extra,message", [
    (dict(mask="cosine"), "needs mask='boxes'"),
    (dict(mask="boxes", levels=[3]), "names a level the backbones do not put out"),
])
def test_bad_backbone_feature_settings_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        feature_kd=dict(source="backbone", **extra))


def test_unknown_feature_normalisation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="feature_kd.normalize must be one of"):
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        feature_kd=dict(normalize="layer"))


def test_weight_in_boxes_hand_computed():
    psi = torch.tensor([[[1.0, 0.5], [0.5, 0.5]], [[0.2, 0.2], [0.2, 1.0]]])  # two images, 2 x 2 cells of 2 px
    boxes = [torch.tensor([[0.5, 0.5, 1.5, 1.5]]), torch.tensor([[2.5, 0.0, 4.0, 1.0], [0.0, 3.0, 1.0, 4.0]])]
    area, weight = weight_in_boxes(psi, boxes, (4, 4))
    # image 0: cell (0, 0) inside; image 1: cells (0, 1) and (1, 0): 3 of 8 cells
    assert area == pytest.approx(3 / 8)
    assert weight == pytest.approx((1.0 + 0.04 + 0.04) / (1 + 0.25 * 3 + 0.04 * 3 + 1.0))


def test_mask_focus_tool_reports_both_masks(tiny_pair, tmp_path):
    """tools/feature_mask_focus.py: one row per mask, teacher stage and level, shares in [0, 1]."""
    import json
    import subprocess
    import sys

    from tests.run_helpers import REPO, subprocess_env, write_distill_config

    config = write_distill_config(tiny_pair, "focus", iters=2, val_interval=2, ckpt_interval=2)
    out = tmp_path / "focus.json"
    res = subprocess.run([sys.executable, "tools/feature_mask_focus.py", "--config", str(config), "--batches", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO,
                         env=subprocess_env())
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    keys = {(r["mask"], r["stage"], r["level"]) for r in rows}
    stages, levels = {r["stage"] for r in rows}, {r["level"] for r in rows}
    assert keys == {(m, s, lv) for m in ("cosine", "boxes") for s in stages for lv in levels} and len(levels) > 1
    assert all(0 < r["gt_area"] <= 1 and 0 <= r["weight_in_gt"] <= 1 for r in rows)
    assert res.stdout.count("| boxes |") == len(rows) // 2


def test_mlp_adapter_is_a_nonlinear_projector_trained_by_the_loss(tmp_path):
    """adapter='mlp': phi is conv-ReLU-conv, built between equal widths too (backbone source, same
    backbones), and the feature loss trains both convs; the default keeps the official linear phi."""
    distiller = build_distiller(tmp_path, tiny_model("deformable", embed_dims=64),
                                tiny_model("deformable", width=4, embed_dims=32),
                                feature_kd=dict(mask="boxes", levels=[0], adapter="mlp"))
    phi = distiller.feature_adapters[0]
    first, _, last = phi
    assert (first.in_channels, first.out_channels, last.out_channels) == (32, 64, 64)
    x = torch.randn(1, 32, 3, 3)
    with torch.no_grad():  # not linear: phi(-x) + phi(x) is not twice phi(0)
        assert not torch.allclose(phi(-x) + phi(x), 2 * phi(torch.zeros_like(x)), atol=1e-4)
    teacher, student, gts, metas = feature_kd_inputs(distiller)
    loss = sum(distiller._feature_kd(teacher, student, gts, metas).values())
    grads = torch.autograd.grad(loss, [first.weight, last.weight])
    assert all(g.abs().sum() > 0 for g in grads)
    same = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"),
                           feature_kd=dict(source="backbone", mask="boxes", levels=[0], adapter="mlp"))
    assert isinstance(same.feature_adapters[0], torch.nn.Sequential)
    linear = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"),
                             feature_kd=dict(source="backbone", mask="boxes", levels=[0]))
    assert isinstance(linear.feature_adapters[0], torch.nn.Identity)


def test_unknown_feature_adapter_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="feature_kd.adapter must be one of"):
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        feature_kd=dict(adapter="deep"))
