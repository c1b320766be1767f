"""Deformable attention's no-grad CPU paths side by side: the sparse product the teacher uses
(``compress/models/sparse_deformable_attention.py``) against mmcv's grid_sample fallback, on random inputs of
one layer's shape (default: the embedded teacher's encoder layer at batch 4, 192 px), interleaved in rounds.

    python tools/time_sparse_attention.py [--batch 4 --queries 765 --heads 8 --points 4 --dims 32]

The layer's share of a whole step is ``tools/profile_kd_step.py``'s business; this isolates the op, e.g. to
compare two versions of it (run it in a worktree of each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.models.sparse_deformable_attention import sparse_deformable_attention  # noqa: E402
from tests.test_sparse_attention import random_inputs  # noqa: E402  (the equality tests' inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--queries", type=int, default=765, help="765 = the tokens of 24, 12, 6 and 3 px maps")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--dims", type=int, default=32, help="channels per head")
    parser.add_argument("--shapes", type=int, nargs="+", default=[24, 12, 6, 3], help="square level sizes")
    parser.add_argument("--calls", type=int, default=20, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    inputs = random_inputs(args.batch, args.heads, args.dims, args.points, [[n, n] for n in args.shapes],
                           args.queries)
    ops = {"sparse product": sparse_deformable_attention,
           "mmcv grid_sample fallback": multi_scale_deformable_attn_pytorch}
    times: dict[str, list[float]] = {name: [] for name in ops}
    with torch.no_grad():
        for op in ops.values():  # warm-up
            op(*inputs)
        for _ in range(args.rounds):
            for name, op in ops.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    op(*inputs)
                times[name].append((time.perf_counter() - start) / args.calls)
    print(f"| op ({torch.get_num_threads()} threads) | ms/call (median of {args.rounds} rounds) | each round |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.2f} | {', '.join(f'{1000 * v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
