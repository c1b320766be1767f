"""FitNet and MGD baselines and the official-style encoder-twice step, against hand-computed references."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.distill.losses.fitnet import fitnet_loss
from compress.distill.losses.mgd import MGDGenerator, mgd_loss, random_keep_mask
from compress.errors import ConfigError
from tests.distill_helpers import build_distiller, run_steps
from tests.tiny import tiny_model


def test_fitnet_is_plain_mse_summed_over_levels():
    t = [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.zeros(1, 1, 1, 2)]
    s = [torch.tensor([[[[0.0, 2.0], [3.0, 6.0]]]]), torch.tensor([[[[1.0, -1.0]]]])]
    # level 1: (1 + 0 + 0 + 4) / 4 = 1.25; level 2: (1 + 1) / 2 = 1
    assert fitnet_loss(t, s).item() == pytest.approx(2.25)


def test_mgd_masks_at_the_requested_ratio_and_regenerates():
    feature = torch.ones(2, 3, 64, 64)
    keep = random_keep_mask(feature, 0.65, torch.Generator().manual_seed(0))
    assert keep.shape == (2, 1, 64, 64) and set(keep.unique().tolist()) == {0.0, 1.0}
    assert keep.mean().item() == pytest.approx(0.35, abs=0.02)

    gen = nn.ModuleList([MGDGenerator(3)])
    t, s = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5, requires_grad=True)
    loss = mgd_loss([t], [s], gen, 0.5, torch.Generator().manual_seed(1))
    mask = random_keep_mask(s, 0.5, torch.Generator().manual_seed(1))
    reference = ((gen[0](s * mask) - t) ** 2).mean()  # the same draw, by hand
    torch.testing.assert_close(loss, reference)
    loss.backward()
    assert s.grad.abs().sum() > 0 and all(p.grad is not None for p in gen.parameters())
    assert torch.all(s.grad[mask.expand_as(s) == 0] == 0)  # masked positions give the student no gradient


@pytest.mark.parametrize("method", ["fitnet", "mgd"])
def test_peer_feature_kd_trains_in_the_distiller(tmp_path, method):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4, embed_dims=32),
                                logits_kd=dict(enable=False), query_prior=dict(enable=False),
                                feature_kd=dict(method=method))
    history = run_steps(distiller, steps=2)
    key = f"loss_fkd_{method}"
    assert all(torch.isfinite(h[key]) and h[key] > 0 for h in history)
    assert not any(k.startswith("loss_fkd_t") for k in history[0])
    assert (distiller.mgd_generators is not None) == (method == "mgd")
    state = distiller.state_dict()
    assert any(k.startswith("mgd_generators.") for k in state) == (method == "mgd")


def test_unknown_feature_method_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="feature_kd.method must be one of"):
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                        feature_kd=dict(method="fgd"))


def test_encoder_twice_runs_the_student_encoder_again(tmp_path):
    calls = {"encoder": 0}
    distillers = {}
    for twice in (False, True):
        distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                    logits_kd=dict(enable=False), feature_kd=dict(enable=False),
                                    query_prior=dict(encoder_twice=twice))
        distiller.student.encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
        calls["encoder"] = 0
        history = run_steps(distiller, steps=1)
        distillers[twice] = (calls["encoder"], history[0])
    assert distillers[False][0] == 1 and distillers[True][0] == 2
    for _, losses in distillers.values():
        assert all(torch.isfinite(v) for k, v in losses.items() if k.startswith("loss_qp"))
