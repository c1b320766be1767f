"""Time the logits KD's Hungarian assignments one after another against side by side (``solve_all``).

Why: whether a stage-pair x image problem of a given size is worth a thread (``PARALLEL_MIN_ENTRIES`` in
``compress/distill/matcher.py``) depends on the machine; this measures it on random predictions of the
given sizes. Real predictions give slower assignments than random ones (close costs, long augmenting paths),
so the threaded gain there is larger than here; ``tools/profile_kd_step.py`` times the real step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from compress.distill.losses.logits_kd import match_pairs
from compress.distill.matcher import kd_cost_matrix, matching_threads, solve_all


def costs_for(queries: int, problems: int, classes: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.rand(2, problems, queries, 4, generator=gen) * 0.5 + 0.1
    logits, probs = torch.randn(problems, queries, classes, generator=gen), torch.rand(problems, queries, classes,
                                                                                       generator=gen)
    return list(kd_cost_matrix(logits, boxes[0], probs, boxes[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, nargs="+", default=[50, 100, 150, 200, 300])
    parser.add_argument("--problems", type=int, default=12, help="stage pairs x images in one step")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = matching_threads()
    print(f"| queries | serial ms | {threads} threads ms | speed-up |\n|---|---|---|---|")
    for queries in args.queries:
        costs = costs_for(queries, args.problems, args.classes)
        times: dict[int, list[float]] = {1: [], threads: []}
        for _ in range(args.repeats):
            for count in times:  # interleaved, so drift hits both alike
                start = time.perf_counter()
                solve_all(lambda cost: match_pairs(cost, None), costs, threads=count)
                times[count].append(1000 * (time.perf_counter() - start))
        serial, parallel = statistics.median(times[1]), statistics.median(times[threads])
        print(f"| {queries} | {serial:.2f} | {parallel:.2f} | {serial / parallel:.2f} |")


if __name__ == "__main__":
    main()
