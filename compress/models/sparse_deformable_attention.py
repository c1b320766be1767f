"""Multi-scale deformable attention without grad as one sparse matrix product, for the frozen teacher on CPU.

mmcv runs this op's CUDA kernel on GPUs; everywhere else it falls back to ``multi_scale_deformable_attn_pytorch``:
a ``grid_sample`` per level, then a stack of every sampled value, (B*H, D, Q, L*P) - 50 MB per encoder layer for
the default teacher - multiplied by the attention weights and summed: memory traffic, and a large share of the
default teacher's forward on 2 CPU cores (``tools/profile_kd_step.py`` times the step with and without this).

Bilinear sampling and the attention weighting are both linear in the values, so the op is exactly one sparse
(queries x keys) matrix with L*P*4 entries per row (4 bilinear corners per sampling point, weight = corner
weight x attention weight) times the (keys x D) value matrix, read in place. Only the CPU fallback is replaced,
only where nothing needs a gradient (sparse CSR products have no useful backward here): the student's training
forward, exports (traced graphs) and mmcv's CUDA kernel are untouched.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import mmcv.ops.multi_scale_deform_attn as mmcv_msda
import torch

_DENSE = mmcv_msda.multi_scale_deformable_attn_pytorch
# Index arithmetic runs in floating point (one vectorised pass for every level); float32 counts exactly to 2**24.
_FLOAT32_EXACT = 2 ** 24


def sparse_deformable_attention(value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor,
                                attention_weights: torch.Tensor) -> torch.Tensor:
    """Same arguments and result as mmcv's ``multi_scale_deformable_attn_pytorch``.

    value (B, S, H, D), spatial_shapes (L, 2) as (h, w), sampling_locations (B, Q, H, L, P, 2) as normalised
    (x, y), attention_weights (B, Q, H, L, P) -> (B, Q, H*D). Matrix rows are (b, q, h) in that order, so the
    product is already in the output layout; columns index the values as (b, key, h), their memory
    order, so ``value`` is used without a copy.
    """
    batch, keys, heads, dims = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    rows = batch * queries * heads
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    index_dtype = torch.float32 if batch * keys * heads < _FLOAT32_EXACT else torch.float64
    device = value.device

    def per_level(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=index_dtype, device=device)

    # every per-level constant broadcasts over the leading dim only: inner loops stay long and contiguous
    size = per_level([[w, h] for h, w in shapes]).view(levels, 2, 1, 1)
    start = per_level([0] + [h * w for h, w in shapes][:-1]).cumsum(0).view(levels, 1, 1)
    xy = sampling_locations.to(index_dtype).permute(3, 5, 4, 0, 1, 2).reshape(levels, 2, points, rows)
    pixel = xy * size - 0.5  # align_corners=False, as grid_sample in mmcv's fallback
    low = pixel.floor()
    frac = (pixel - low).to(value.dtype)
    corner = torch.stack([low, low + 1])  # (2, L, 2, P, rows): lower / upper corner, x and y
    inside = corner.clone()
    for level, (h, w) in enumerate(shapes):
        inside[:, level, 0].clamp_(0, w - 1)
        inside[:, level, 1].clamp_(0, h - 1)
    # grid_sample's zero padding: a corner off the map weighs nothing (the weights are separable in x and y);
    # its clamped index stays a valid column
    valid = (inside == corner).to(value.dtype)
    wx0, wy0 = ((1 - frac) * valid[0]).unbind(1)
    wx1, wy1 = (frac * valid[1]).unbind(1)
    (x0, y0), (x1, y1) = inside[0].unbind(1), inside[1].unbind(1)
    width = size[:, 0]
    top, bottom = y0 * width + start, y1 * width + start
    columns = torch.stack([top + x0, top + x1, bottom + x0, bottom + x1], 1)  # (L, 4, P, rows)
    attention = attention_weights.permute(3, 4, 0, 1, 2).reshape(levels, 1, points, rows)
    weights = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], 1) * attention
    per_row = levels * 4 * points
    block = (torch.arange(batch, dtype=index_dtype, device=device).view(batch, 1, 1) * (keys * heads)
             + torch.arange(heads, dtype=index_dtype, device=device)).expand(batch, queries, heads).reshape(rows)
    col = (columns.view(per_row, rows) * heads + block).t().to(torch.int32).reshape(-1)
    crow = torch.arange(0, rows * per_row + 1, per_row, dtype=torch.int32, device=device)
    with warnings.catch_warnings():  # CSR construction and its product are all this uses of the "beta" API
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        matrix = torch.sparse_csr_tensor(crow, col, weights.view(per_row, rows).t().reshape(-1),
                                         size=(rows, batch * keys * heads), check_invariants=False)
    return (matrix @ value.reshape(batch * keys * heads, dims)).view(batch, queries, heads * dims)


def _dispatch(value, spatial_shapes, sampling_locations, attention_weights):
    tensors = (value, sampling_locations, attention_weights)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if needs_grad or value.dtype not in (torch.float32, torch.float64) or torch.jit.is_tracing():
        return _DENSE(value, spatial_shapes, sampling_locations, attention_weights)
    return sparse_deformable_attention(value, spatial_shapes, sampling_locations, attention_weights)


@contextlib.contextmanager
def sparse_deformable_sampling() -> Iterator[None]:
    """Inside: mmcv's CPU fallback for deformable attention runs as one sparse product where no grad is needed.

    mmcv's ``MultiScaleDeformableAttention.forward`` looks the fallback up in its module at every call, so
    swapping that one name reroutes every such layer for the duration, and nothing else changes."""
    previous = mmcv_msda.multi_scale_deformable_attn_pytorch
    mmcv_msda.multi_scale_deformable_attn_pytorch = _dispatch
    try:
        yield
    finally:
        mmcv_msda.multi_scale_deformable_attn_pytorch = previous
