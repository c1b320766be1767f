"""mmdet-style evaluation entry point: ``python tools/test.py CONFIG CHECKPOINT [--cfg-options ...]``.
COCO metrics (pycocotools) of a detector model file, or of a distiller checkpoint's student."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.__main__ import finish, main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        print("usage: python tools/test.py CONFIG CHECKPOINT [--cfg-options k=v ...]", file=sys.stderr)
        sys.exit(2)
    finish(main(["evaluate", "--config", args[0], "--checkpoint", args[1], *args[2:]]))
