"""mmdet-style training entry point: ``python tools/train.py CONFIG [--work-dir] [--resume] [--amp]
[--cfg-options k=v ...] [--launcher pytorch]``. A distiller config runs DETRDistill; a detector config
trains that detector alone (teacher or baseline). Same checks and outputs as ``python -m compress``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import DictAction  # noqa: E402

from compress.__main__ import exit_code, finish  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--work-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args()
    from compress.config import load_config
    from compress.training import distill, train_detector

    def train() -> None:
        is_distiller = load_config(args.config).model.get("type") == "DETRDistiller"
        (distill if is_distiller else train_detector)(args)

    return exit_code(train)


if __name__ == "__main__":
    finish(main())
