"""The frozen teacher's outputs per training image, kept so that an image seen again skips the teacher's forward.

Why this is exact: the teacher is frozen and in eval mode (no dropout, no denoising queries, BatchNorm on its
running statistics), so what it puts out for an image depends on that image's tensor, its valid size and the
padded batch size only, not on the other images of the batch. The key is a hash of exactly those, taken on the
tensor the model receives (after the pipeline and the data preprocessor), so no pipeline can fool it: a view
that a random crop or colour jitter made new is a miss, the same image flipped the same way again a hit.
Images of a batch that miss go through the teacher together, sliced out of the batch (their padding is kept),
and the batch is assembled from the cached and the new outputs.

Where it pays: datasets whose pipeline repeats views (the embedded default: a random flip and a fixed resize,
2000 images, 3 epochs in 1500 iterations of batch 4: about 40 % of the teacher's images are repeats) and long
schedules on small datasets. On COCO with multi-scale training and random crops almost nothing repeats; keep
it off there (it would only spend memory). Entries are held in CPU memory up to ``max_mb``; once full,
new images are no longer kept (every image is equally likely to come back, so nothing is evicted).

Feature maps are most of a record's bytes, and feature KD often reads only some levels (the embedded default:
the finest neck level, three quarters of the four levels' bytes; the encoder memory: the neck levels' sizes,
none of their values). ``kept_levels`` keeps the values of the read levels only; every other level is a
placeholder of its shape and dtype holding one element, so the shape checks and the memory's split per level
see the teacher's layout while the cache holds (and copies) only what a loss reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from compress.distill.taps import QUERY_KEYS, Taps

# What the losses read of the teacher, with the dimension that indexes the image. Per-level lists (neck,
# backbone) are kept per level; ``decoder_inputs`` keeps only the query group (the rest is the student's own).
_IMAGE_DIM = {"cls_scores": 1, "bbox_preds": 1, "hidden_states": 1, "memory": 0, "feats": 0, "backbone_feats": 0,
              **{key: 0 for key in QUERY_KEYS}}
ALWAYS = ("cls_scores", "bbox_preds", "hidden_states", *QUERY_KEYS)


def image_key(image: torch.Tensor, meta: dict) -> bytes:
    """A digest of the image tensor as the model receives it, with the sizes the teacher's masks read."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(image.shape), str(image.dtype), tuple(meta["img_shape"]),
                        tuple(meta["batch_input_shape"]))).encode())
    digest.update(image.detach().contiguous().cpu().numpy())  # the buffer itself, no bytes copy
    return digest.digest()


def _split(taps: Taps, name: str):
    """The field ``name`` of ``taps``: a tensor, a tuple of per-level tensors, or None."""
    if name in ("cls_scores", "bbox_preds", "memory", "feats", "backbone_feats"):
        return getattr(taps, name)
    if name == "hidden_states":
        return taps.head_inputs["hidden_states"]
    return taps.decoder_inputs.get(name)


def _placeholder(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """A tensor of this shape and dtype with one element's storage (every stride 0)."""
    return torch.zeros((), dtype=dtype, device=device).expand(shape)


def _is_placeholder(value: torch.Tensor) -> bool:
    return value.dim() > 0 and not any(value.stride())


def _take(value, dim: int, index: int, kept: tuple[int, ...] | None = None):
    """Image ``index`` of ``value`` on the CPU; of a per-level tuple, levels outside ``kept`` as placeholders."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(_take(v, dim, index) if kept is None or level in kept
                     else _placeholder(v.select(dim, index).shape, v.dtype) for level, v in enumerate(value))
    return value.select(dim, index).detach().to("cpu", copy=True)


def _stack(values: list, dim: int, device: torch.device):
    if values[0] is None:
        return None
    if isinstance(values[0], tuple):
        return tuple(_stack([v[level] for v in values], dim, device) for level in range(len(values[0])))
    if _is_placeholder(values[0]):
        shape = values[0].shape
        return _placeholder((*shape[:dim], len(values), *shape[dim:]), values[0].dtype, device)
    return torch.stack(values, dim).to(device)


def _nbytes(record: dict) -> int:
    def size(value) -> int:
        if value is None:
            return 0
        if isinstance(value, tuple):
            return sum(size(v) for v in value)
        return value.element_size() if _is_placeholder(value) else value.numel() * value.element_size()
    return sum(size(v) for v in record.values())


@dataclass
class TeacherCache:
    """Per-image teacher outputs (``fields`` of them) in CPU memory, at most ``max_bytes``; of a per-level field
    named in ``kept_levels`` only those levels' values (the others as placeholders, see the module doc)."""

    max_bytes: int
    fields: tuple[str, ...] = ALWAYS
    kept_levels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    entries: dict[bytes, dict] = field(default_factory=dict)
    used_bytes: int = 0
    hits: int = 0
    misses: int = 0

    def lookup(self, keys: list[bytes]) -> list[dict | None]:
        found = [self.entries.get(key) for key in keys]
        misses = sum(record is None for record in found)
        self.hits += len(found) - misses
        self.misses += misses
        return found

    def records(self, taps: Taps) -> list[dict]:
        """One record per image of a teacher forward, on the CPU."""
        batch = taps.cls_scores.shape[1]
        return [{name: _take(_split(taps, name), _IMAGE_DIM[name], b, self.kept_levels.get(name))
                 for name in self.fields} for b in range(batch)]

    def keep(self, key: bytes, record: dict) -> None:
        size = _nbytes(record)
        if key not in self.entries and self.used_bytes + size <= self.max_bytes:
            self.entries[key] = record
            self.used_bytes += size

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def assemble(self, records: list[dict], device: torch.device) -> Taps:
        """A batch's Taps from its images' records: what the losses read, nothing else."""
        value = {name: _stack([r[name] for r in records], _IMAGE_DIM[name], device) for name in self.fields}
        return Taps(feats=value.get("feats") or (), memory=value.get("memory"),
                    decoder_inputs={key: value[key] for key in QUERY_KEYS},
                    head_inputs={"hidden_states": value["hidden_states"]},
                    cls_scores=value["cls_scores"], bbox_preds=value["bbox_preds"],
                    backbone_feats=value.get("backbone_feats") or ())
