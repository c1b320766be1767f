"""FitNet and MGD baselines and the official-style teacher-group pass, against hand-computed references."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.distill.losses.fitnet import fitnet_loss
from compress.distill.losses.mgd import MGDGenerator, mgd_loss, random_keep_mask
from compress.errors import ConfigError
from tests.distill_helpers import build_distiller, run_steps
from tests.tiny import FAMILIES, tiny_model


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


def test_encoder_twice_runs_the_official_step(tmp_path):
    """The official code's teacher-group pass re-runs the encoder and decodes the group alone, on the shared
    backbone/neck output: the baseline the one-pass step's speed-up is quoted against must not cost more."""
    counts: dict[tuple[bool, str], int] = {}
    decoded_queries: dict[bool, list[int]] = {False: [], True: []}
    for twice in (False, True):
        distiller = build_distiller(tmp_path, tiny_model("deformable", num_queries=12),
                                    tiny_model("deformable", width=4), logits_kd=dict(enable=False),
                                    feature_kd=dict(enable=False), query_prior=dict(encoder_twice=twice))
        for part in ("backbone", "neck", "encoder"):
            counts[(twice, part)] = 0
            getattr(distiller.student, part).register_forward_hook(
                lambda *a, key=(twice, part): counts.__setitem__(key, counts[key] + 1))
        distiller.student.decoder.register_forward_hook(
            lambda module, args, kwargs, out, twice=twice: decoded_queries[twice].append(kwargs["query"].shape[1]),
            with_kwargs=True)
        history = run_steps(distiller, steps=1)
        assert all(torch.isfinite(v) for k, v in history[0].items() if k.startswith("loss_qp"))
    assert [counts[(twice, "encoder")] for twice in (False, True)] == [1, 2]
    assert all(counts[(twice, part)] == 1 for twice in (False, True) for part in ("backbone", "neck"))
    own, group = distiller.student.num_queries, distiller.teacher.num_queries
    assert (own, group) == (20, 12)
    # Deformable DETR decodes the group in a call of its own either way; the own queries only once
    assert decoded_queries == {False: [own, group], True: [own, group]}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_encoder_twice_decodes_the_group_as_the_one_pass_step_does(tmp_path, family):
    from compress.distill.taps import encode_again_and_decode_group, forward_taps
    from tests.conftest import make_batch

    distiller = build_distiller(tmp_path, tiny_model(family), tiny_model(family, width=4))
    student = distiller.student.eval()  # no dropout, no denoising queries: both passes see the same model
    data = distiller.data_preprocessor(make_batch(2), True)
    group = distiller._query_group(distiller._teacher_forward(data["inputs"], data["data_samples"]))
    with torch.no_grad():
        one_pass = forward_taps(student, data["inputs"], data["data_samples"], group)
        again = encode_again_and_decode_group(student, one_pass, data["data_samples"], group)
    assert again[0].shape[2] == group["query"].shape[1]
    torch.testing.assert_close(again[0], one_pass.extras["group"][0])
    torch.testing.assert_close(again[1], one_pass.extras["group"][1])


def test_encoder_twice_trains_like_the_one_pass_step(tmp_path):
    """Official parity: the encoder output does not depend on the queries, so its second pass changes the
    step's cost, not its result: the same losses and student gradients as one shared pass (DINO, no dropout,
    and the denoising queries drawn once either way)."""
    from tests.conftest import make_batch

    steps = {}
    for twice in (False, True):
        torch.manual_seed(0)
        distiller = build_distiller(tmp_path / str(twice), tiny_model("dino", num_queries=12),
                                    tiny_model("dino", width=4), query_prior=dict(encoder_twice=twice))
        distiller.train()
        data = distiller.data_preprocessor(make_batch(2, seed=3), True)
        torch.manual_seed(1)
        losses = distiller(**data, mode="loss")
        sum(v for k, v in losses.items() if "loss" in k).backward()
        grads = {n: p.grad.clone() for n, p in distiller.student.named_parameters() if p.grad is not None}
        steps[twice] = ({k: v.detach() for k, v in losses.items()}, grads)
    (losses_one, grads_one), (losses_two, grads_two) = steps[False], steps[True]
    assert any(k.startswith("loss_qp") for k in losses_one) and losses_one.keys() == losses_two.keys()
    for key in losses_one:
        torch.testing.assert_close(losses_two[key], losses_one[key], rtol=1e-5, atol=1e-6, msg=key)
    assert grads_one.keys() == grads_two.keys() and any("encoder" in n for n in grads_one)
    for name in grads_one:
        torch.testing.assert_close(grads_two[name], grads_one[name], rtol=1e-4, atol=1e-6, msg=name)
