"""Hungarian matching and its costs against brute force and direct formulas."""

from __future__ import annotations

import itertools
import os
import threading

import pytest
import torch
import torch.nn.functional as F

from compress.distill.matcher import hungarian, kd_cost_matrix, matching_threads, soft_bce_cost, solve_all
from compress.distill.stage_pairing import assignment_stage, group_stages


def brute_force_min(cost: torch.Tensor) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, p[i]].item() for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(cost[p[j], j].item() for j in range(m)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("shape", [(5, 5), (4, 6), (6, 4), (1, 3)])
def test_hungarian_matches_brute_force(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(5):
        cost = torch.rand(shape, generator=gen) * 10 - 3
        rows, cols = hungarian(cost)
        assert len(set(rows.tolist())) == len(rows) == min(shape)
        assert len(set(cols.tolist())) == len(cols)
        assert cost[rows, cols].sum().item() == pytest.approx(brute_force_min(cost), abs=1e-5)


def test_soft_bce_cost_equals_elementwise_sum():
    gen = torch.Generator().manual_seed(0)
    logits, probs = torch.randn(4, 3, generator=gen), torch.rand(5, 3, generator=gen)
    expected = torch.stack([torch.stack([F.binary_cross_entropy_with_logits(logits[n], probs[m], reduction="sum")
                                         for m in range(5)]) for n in range(4)])
    torch.testing.assert_close(soft_bce_cost(logits, probs), expected, atol=1e-5, rtol=1e-5)


def test_kd_cost_hand_computed():
    # one class, identical boxes except height: cost = BCE + 5 * L1 - 2 * GIoU
    logits = torch.tensor([[0.0]])
    probs = torch.tensor([[0.25]])
    s_box = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    t_box = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    bce = torch.nn.functional.softplus(torch.tensor(0.0)).item()  # x = 0: log 2, p term vanishes
    giou = 0.04 / 0.08  # inside box: IoU = area ratio, hull = union
    expected = bce + 5 * 0.2 - 2 * giou
    assert kd_cost_matrix(logits, s_box, probs, t_box).item() == pytest.approx(expected, abs=1e-6)


def test_batched_kd_cost_is_the_stack_of_per_image_costs():
    """The logits KD computes a whole batch's matrices in one call: each slice equals its image's own."""
    gen = torch.Generator().manual_seed(1)
    logits, probs = torch.randn(3, 6, 4, generator=gen), torch.rand(3, 5, 4, generator=gen)
    s_box = torch.rand(3, 6, 2, generator=gen).repeat(1, 1, 2) * 0.5 + 0.1
    t_box = torch.rand(3, 5, 2, generator=gen).repeat(1, 1, 2) * 0.5 + 0.1
    batched = kd_cost_matrix(logits, s_box, probs, t_box)
    assert batched.shape == (3, 6, 5)
    for b in range(3):
        torch.testing.assert_close(batched[b], kd_cost_matrix(logits[b], s_box[b], probs[b], t_box[b]))


def test_stage_grouping_uniform_and_deeper_student():
    assert group_stages(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert group_stages(4, 2) == [[0, 1], [2, 3]]
    assert group_stages(3, 3) == [[0], [1], [2]]
    assert group_stages(6, 4) == [[0, 1], [2], [3, 4], [5]]
    assert group_stages(2, 4) == [[0], [0], [1], [1]]
    assert assignment_stage(6, 3) == [1, 3, 5]
    with pytest.raises(ValueError):
        group_stages(0, 2)


def test_solve_all_runs_the_problems_side_by_side_in_order():
    """With two threads both problems must be in flight at once: the barrier breaks (after 10 s) if the second
    only starts when the first has returned."""
    barrier = threading.Barrier(2, timeout=10)

    def solve(x: int) -> int:
        barrier.wait()
        return x * x

    assert solve_all(solve, [3, 4], threads=2) == [9, 16]
    assert solve_all(lambda x: x + 1, [1, 2, 3], threads=1) == [2, 3, 4]
    assert solve_all(lambda x: x, [], threads=4) == []


def test_matching_threads_share_the_cores_between_torchrun_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert matching_threads() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert matching_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert matching_threads() == 1


def test_matching_benchmark_tool_times_serial_and_threaded_solves():
    import subprocess
    import sys

    from tests.run_helpers import REPO, subprocess_env

    res = subprocess.run([sys.executable, "tools/bench_matching.py", "--queries", "8", "40", "--repeats", "1"],
                         capture_output=True, text=True, timeout=300, cwd=REPO, env=subprocess_env())
    assert res.returncode == 0, res.stderr[-2000:]
    table = [line.split("|")[1:-1] for line in res.stdout.splitlines() if line.startswith("| ")]
    assert "serial ms" in table[0][1] and [row[0].strip() for row in table[1:]] == ["8", "40"]
    assert all(float(cell) > 0 for row in table[1:] for cell in row[1:])
