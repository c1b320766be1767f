"""The official release's contrastive query distillation: InfoNCE by hand, and its pairs are logits KD's."""

from __future__ import annotations

import math

import pytest
import torch

import compress.distill.distiller as distiller_module
from compress.distill.losses.contrastive_kd import ContrastiveHead, info_nce
from compress.errors import ConfigError
from tests.conftest import make_batch
from tests.distill_helpers import build_distiller, run_steps
from tests.tiny import tiny_model


def test_info_nce_hand_computed():
    # cosines: teacher 0 = (1, 0) vs students (2, 0), (1, 1) -> 1, 1/sqrt(2); teacher 1 = (0, 3) -> 0, 1/sqrt(2)
    student = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    t, r = 0.5, 1 / math.sqrt(2)
    row0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(r / t)))
    row1 = -math.log(math.exp(r / t) / (math.exp(0 / t) + math.exp(r / t)))
    assert info_nce(student, teacher, t).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    # swapping the students' order swaps who is whose positive: a different loss
    assert info_nce(student.flip(0), teacher, t).item() != pytest.approx((row0 + row1) / 2, abs=1e-3)


def test_head_projects_each_side_then_contrasts():
    torch.manual_seed(0)
    head = ContrastiveHead(student_dims=8, teacher_dims=12, dims=16).train()
    student, teacher = torch.randn(5, 8, requires_grad=True), torch.randn(5, 12)
    loss = head(student, teacher, 0.07)
    torch.testing.assert_close(loss, info_nce(head.student(student), head.teacher(teacher), 0.07))
    loss.backward()
    assert student.grad.abs().sum() > 0
    single = head(student[:1], teacher[:1], 0.07)  # one pair has no negatives
    assert single.item() == 0.0


def test_pairs_are_the_logits_kd_matching_and_skip_dino_denoising_queries(tmp_path, monkeypatch):
    # 20 student queries vs 30 teacher queries: swapped rows / columns would pick other embeddings
    distiller = build_distiller(tmp_path, tiny_model("dino", num_queries=30), tiny_model("dino", width=4),
                                feature_kd=dict(enable=False), query_prior=dict(enable=False),
                                contrastive_kd=dict(enable=True, proj_dims=32))
    matches, taps, fed = [], {}, []
    real_match, real_taps = distiller_module.match_stages, distiller_module.forward_taps

    def recording_match(*args, **kwargs):
        result = real_match(*args, **kwargs)
        matches.extend(result)
        return result

    def recording_taps(model, *args, **kwargs):
        taps["teacher" if model is distiller.teacher else "student"] = out = real_taps(model, *args, **kwargs)
        return out

    monkeypatch.setattr(distiller_module, "match_stages", recording_match)
    monkeypatch.setattr(distiller_module, "forward_taps", recording_taps)
    head_forward = distiller.contrast_head.forward
    monkeypatch.setattr(distiller.contrast_head, "forward",
                        lambda s, t, temp: fed.append((s, t)) or head_forward(s, t, temp))
    distiller.train()
    losses = distiller.loss(**distiller.data_preprocessor(make_batch(2), True))
    student, teacher = taps["student"], taps["teacher"]
    assert student.num_dn > 0
    assert sorted(k for k in losses if k.startswith("loss_ckd")) == ["loss_ckd_s0", "loss_ckd_s1"]
    assert len(matches) == len(fed) == 2  # one matching per stage pair, shared with logits KD
    for stage, (match, (s_emb, t_emb)) in enumerate(zip(matches, fed)):
        assert len(match.rows) == 2 * 20  # every student query of both images has a teacher partner
        for p in range(len(match.rows)):
            b, row, col = match.images[p], match.rows[p], match.cols[p]
            torch.testing.assert_close(s_emb[p], student.head_inputs["hidden_states"][stage, b, student.num_dn + row])
            torch.testing.assert_close(t_emb[p], teacher.head_inputs["hidden_states"][stage, b, col])


def test_contrastive_term_trains_the_student_and_leaves_the_teacher(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                logits_kd=dict(enable=False), feature_kd=dict(enable=False),
                                query_prior=dict(enable=False), contrastive_kd=dict(enable=True, weight=0.2))
    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    decoder_before = [p.detach().clone() for p in distiller.student.decoder.parameters()]
    history = run_steps(distiller, steps=2)
    assert all(torch.isfinite(h["loss_ckd_s1"]) and h["loss_ckd_s1"] > 0 for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, distiller.student.decoder.parameters()))
    assert all(torch.equal(v, distiller.teacher.state_dict()[k]) for k, v in before.items())
    # the heads are the distiller's (saved in its checkpoints, dropped with it at export), not the student's
    assert any(k.startswith("contrast_head.") for k in distiller.state_dict())
    assert not any("contrast" in k for k in distiller.student.state_dict())


@pytest.mark.parametrize(("section", "message"), [
    (dict(enable=True, temperature=0.0), "contrastive_kd.temperature must be > 0"),
    (dict(enable=True, proj_dims=0), "contrastive_kd.proj_dims must be a positive int"),
    (dict(enable=True, temprature=0.1), "unknown key(s) ['temprature'] in model.contrastive_kd"),
])
def test_bad_contrastive_settings_are_one_line_errors(tmp_path, section, message):
    with pytest.raises(ConfigError) as info:
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        contrastive_kd=section)
    assert message in str(info.value) and "\n" not in str(info.value)
