"""Deformable attention as one sparse product (the teacher's no-grad CPU path) against mmcv's fallback and
hand-computed bilinear samples; the switch routes only no-grad calls and restores mmcv's function."""

from __future__ import annotations

import mmcv.ops.multi_scale_deform_attn as mmcv_msda
import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention
from torch.profiler import profile

from compress.errors import ConfigError
from compress.models.sparse_deformable_attention import sparse_deformable_attention, sparse_deformable_sampling
from tests.conftest import make_batch
from tests.distill_helpers import build_distiller
from tests.tiny import tiny_model

DENSE = mmcv_msda.multi_scale_deformable_attn_pytorch


def random_inputs(batch, heads, dims, points, shapes, queries, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes)
    keys = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(batch, keys, heads, dims, generator=gen)
    # locations up to 0.3 outside the image: corners off the map must read as zeros, like grid_sample's padding
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen) * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=gen).softmax(-1)
    return value, shapes, locations, weights


@pytest.mark.parametrize("batch,heads,dims,points,shapes,queries", [
    (2, 3, 5, 2, [[7, 5], [4, 3], [2, 2]], 9),  # non-square levels, odd sizes
    (1, 8, 32, 4, [[24, 24], [12, 12], [6, 6], [3, 3]], 765),  # the default teacher's encoder layer
    (3, 1, 4, 1, [[1, 6]], 4),  # one row, one point
])
def test_sparse_product_equals_mmcv_fallback(batch, heads, dims, points, shapes, queries):
    inputs = random_inputs(batch, heads, dims, points, shapes, queries)
    expected = DENSE(*inputs)
    got = sparse_deformable_attention(*inputs)
    assert got.shape == expected.shape == (batch, queries, heads * dims)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bilinear_samples_by_hand():
    """One head, one 2x3 map (values 0..5 row-major), align_corners=False: pixel (x, y) has its centre at
    ((x + 0.5) / 3, (y + 0.5) / 2)."""
    value = torch.arange(6.0).view(1, 6, 1, 1)
    shapes = torch.tensor([[2, 3]])
    centre = [(1.5 / 3, 0.5 / 2)]  # pixel (1, 0): value 1
    middle = [(1.0 / 3, 1.0 / 2)]  # between pixels 0, 1, 3, 4: (0 + 1 + 3 + 4) / 4 = 2
    edge = [(0.0, 1.5 / 2)]  # x = -0.5 px, row 1: half of pixel (0, 1) = 1.5, the other half off the map
    outside = [(1.2, 0.5)]  # every corner off the map
    expected = torch.tensor([1.0, 2.0, 1.5, 0.0])
    locations = torch.tensor([centre, middle, edge, outside]).view(1, 4, 1, 1, 1, 2)
    weights = torch.ones(1, 4, 1, 1, 1)
    torch.testing.assert_close(sparse_deformable_attention(value, shapes, locations, weights).view(4), expected)
    # two points per query: the attention weights mix them
    two = torch.tensor([centre[0], middle[0]]).view(1, 1, 1, 1, 2, 2)
    mixed = sparse_deformable_attention(value, shapes, two, torch.tensor([0.25, 0.75]).view(1, 1, 1, 1, 2))
    assert float(mixed) == pytest.approx(0.25 * 1.0 + 0.75 * 2.0)


def grid_sample_calls(fn) -> int:
    with profile() as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::grid_sampler_2d")


def test_switch_routes_no_grad_calls_only_and_restores_mmcv():
    torch.manual_seed(0)
    layer = MultiScaleDeformableAttention(embed_dims=16, num_heads=2, num_levels=2, num_points=2, batch_first=True)
    layer.init_weights()
    layer.eval()  # no dropout
    shapes = torch.tensor([[6, 6], [3, 3]])
    starts = torch.tensor([0, 36])
    memory = torch.randn(2, 45, 16)
    query = torch.randn(2, 5, 16, requires_grad=True)
    refs = torch.rand(2, 5, 2, 2)

    def run():
        return layer(query=query, value=memory, reference_points=refs, spatial_shapes=shapes,
                     level_start_index=starts)

    with torch.no_grad():
        dense_out = run()
        assert grid_sample_calls(run) == 2  # mmcv's fallback: one grid_sample per level
        with sparse_deformable_sampling():
            sparse_out = run()
            assert grid_sample_calls(run) == 0
    torch.testing.assert_close(sparse_out, dense_out, atol=1e-5, rtol=1e-5)
    with sparse_deformable_sampling():  # a forward that needs grad keeps mmcv's differentiable version
        out = run()
        assert out.grad_fn is not None and grid_sample_calls(run) == 2
    out.sum().backward()
    assert query.grad is not None and float(query.grad.abs().sum()) > 0
    assert mmcv_msda.multi_scale_deformable_attn_pytorch is DENSE
    with pytest.raises(RuntimeError), sparse_deformable_sampling():
        raise RuntimeError("a failing forward")
    assert mmcv_msda.multi_scale_deformable_attn_pytorch is DENSE


def test_bf16_autocast_takes_the_sparse_product_in_float32():
    """A teacher under bf16 autocast gets the sparse product (computed in float32 from its bf16 inputs), not
    mmcv's slower per-level grid_sample fallback."""
    value, shapes, locations, weights = random_inputs(2, 4, 8, 2, [[12, 12], [6, 6]], 30)
    low = (value.bfloat16(), shapes, locations.bfloat16(), weights.bfloat16())
    expected = DENSE(*(t.float() if t.is_floating_point() else t for t in low)).bfloat16()

    def routed():
        return mmcv_msda.multi_scale_deformable_attn_pytorch(*low)

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), sparse_deformable_sampling():
        assert grid_sample_calls(routed) == 0
        got = routed()
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)
    assert grid_sample_calls(lambda: DENSE(*low)) == 2  # the fallback it replaces: one grid_sample per level


def test_teacher_forward_is_the_same_with_sparse_attention(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4))
    assert distiller.teacher_sparse_attention is True  # the default
    data = distiller.data_preprocessor(make_batch(2, 96), True)

    def teacher():
        return distiller._teacher_forward(data["inputs"], data["data_samples"])

    assert grid_sample_calls(teacher) == 0
    sparse = teacher()
    distiller.teacher_sparse_attention = False
    assert grid_sample_calls(teacher) > 0
    dense = teacher()
    for name in ("memory", "cls_scores", "bbox_preds"):
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), atol=1e-4, rtol=1e-4)


def test_bad_sparse_attention_value_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"),
                        teacher_options={"sparse_attention": "yes"})
    text = str(err.value)
    assert "\n" not in text and "model.teacher.sparse_attention must be True or False" in text


def test_timing_tool_times_both_paths():
    """tools/time_sparse_attention.py at a small shape: one row per path, positive medians, one per round."""
    import subprocess
    import sys

    from tests.run_helpers import REPO, subprocess_env

    res = subprocess.run([sys.executable, "tools/time_sparse_attention.py", "--batch", "1", "--queries", "20",
                          "--heads", "2", "--shapes", "6", "3", "--calls", "2", "--rounds", "2"],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=subprocess_env())
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in res.stdout.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in rows[1:]] == ["sparse product", "mmcv grid_sample fallback"]
    for _, median, rounds in rows[1:]:
        assert float(median) > 0 and len(rounds.split(",")) == 2
