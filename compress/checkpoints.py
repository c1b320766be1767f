"""Checkpoint loading and saving that works with torch >= 2.6 and mmengine 0.10.7.

Why: torch.load defaults to ``weights_only=True`` since 2.6 and mmengine calls it without the argument,
so ``resume``/``load_from`` fail on mmengine's own checkpoints (they pickle the message hub). The project
only loads checkpoints it was pointed at by its user, so a local loader that allows full unpickling is
registered for local paths (the same trust model as mmengine before torch 2.6). User-facing model files
(teacher, exported student) are plain ``{meta, state_dict}`` files that need no unpickling of objects.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from compress.errors import CheckpointError


@CheckpointLoader.register_scheme(prefixes="", force=True)
def _load_trusted_local(filename: str, map_location=None):
    if not Path(filename).is_file():
        raise CheckpointError(f"checkpoint not found: {filename}; train it first or fix the path in the config")
    return torch.load(filename, map_location=map_location, weights_only=False)


def load_state_dict_file(path: str | Path, what: str = "checkpoint", fix: str = "") -> dict[str, torch.Tensor]:
    """Read a checkpoint's ``state_dict`` (mmengine full or ``{meta, state_dict}``), as float32 tensors."""
    p = Path(path)
    hint = f"; {fix}" if fix else ""
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}{hint}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure means the file is not a usable checkpoint
        raise CheckpointError(f"{what} {p} is unreadable ({type(exc).__name__}: {exc}){hint}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} {p} holds no state_dict of tensors{hint}")
    # A diverged run saves NaN weights without complaint; caught here, not as a NaN loss or empty detections later
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{what} {p} has NaN or inf values in {len(broken)} tensor(s) (e.g. {broken[0]}): "
                              f"the run that wrote it diverged{hint}")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def save_model_file(state: dict[str, torch.Tensor], path: str | Path, meta: dict, half: bool = False) -> str:
    """Write a plain ``{meta, state_dict}`` model file and return its SHA-256.

    ``half`` stores floating tensors as float16 (halves the size of a shipped checkpoint; loading casts back).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
           for k, v in state.items()}
    torch.save({"meta": meta, "state_dict": out}, p)
    return sha256_file(p)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
