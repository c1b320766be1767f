"""Latency samples -> the figures every benchmark reports (percentiles in ms, throughput)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def summarize(latencies_s: list[float], items_per_call: int = 1, wall_s: float | None = None) -> dict[str, float]:
    """p50/p90/p99/mean in ms; throughput in items/s over ``wall_s`` (default: the sum of the latencies)."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    wall = wall_s if wall_s is not None else float(np.sum(latencies_s))
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3),
            "throughput_per_s": round(items_per_call * ms.size / wall, 2) if wall > 0 else 0.0}


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 5, items_per_call: int = 1) -> dict[str, float]:
    """Warm up, then time ``runs`` sequential calls of ``fn`` with a monotonic clock."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return summarize(samples, items_per_call)
