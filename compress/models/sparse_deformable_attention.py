"""Multi-scale deformable attention without grad as one sparse matrix product, for the frozen teacher on CPU.

mmcv runs this op's CUDA kernel on GPUs; everywhere else it falls back to ``multi_scale_deformable_attn_pytorch``:
a ``grid_sample`` per level, then a stack of every sampled value, (B*H, D, Q, L*P) - 50 MB per encoder layer for
the default teacher - multiplied by the attention weights and summed: memory traffic, and a large share of the
default teacher's forward on 2 CPU cores (``tools/profile_kd_step.py`` times the step with and without this).

Bilinear sampling and the attention weighting are both linear in the values, so the op is exactly one sparse
(queries x keys) matrix with L*P*4 entries per row (4 bilinear corners per sampling point, weight = corner
weight x attention weight) times the (keys x D) value matrix, read in place. Only the CPU fallback is replaced,
only where nothing needs a gradient (sparse CSR products have no useful backward here): the student's training
forward, exports (traced graphs) and mmcv's CUDA kernel are untouched. A teacher under bf16 autocast gets the
same product, in float32.
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
    order, so ``value`` is used without a copy. The index arithmetic runs row-major, (rows, L*P) like the
    inputs, so the CSR arrays come out in place: a rows-last layout needed two transposing copies of
    (rows, 4 * L * P) arrays per call, which took half of the op's time on the default teacher's encoder.
    """
    batch, keys, heads, dims = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    rows, slots = batch * queries * heads, levels * points
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    index_dtype = torch.float32 if batch * keys * heads < _FLOAT32_EXACT else torch.float64
    device = value.device

    def per_slot(values: list) -> torch.Tensor:  # one entry per level -> one per (level, point)
        return torch.tensor(values, dtype=index_dtype, device=device).repeat_interleave(points, 0)

    size = per_slot([[w, h] for h, w in shapes])  # (L*P, 2) as (w, h)
    start = per_slot([sum(h * w for h, w in shapes[:level]) for level in range(levels)])
    pixel = sampling_locations.reshape(rows, slots, 2).to(index_dtype) * size - 0.5  # align_corners=False
    low = pixel.floor()
    high = low + 1
    frac = (pixel - low).to(value.dtype)
    # grid_sample's zero padding: a corner off the map weighs nothing (the weights are separable in x and y);
    # its clamped index stays a valid column
    low_in, high_in = low.clamp(min=0).minimum(size - 1), high.clamp(min=0).minimum(size - 1)
    (wx0, wy0), (wx1, wy1) = ((1 - frac) * (low_in == low)).unbind(-1), (frac * (high_in == high)).unbind(-1)
    (x0, y0), (x1, y1) = low_in.unbind(-1), high_in.unbind(-1)
    # column of value (b, key, h) = (b * keys + key) * heads + h, with key = start + y * w + x
    block = (torch.arange(batch, dtype=index_dtype, device=device).view(batch, 1, 1) * (keys * heads)
             + torch.arange(heads, dtype=index_dtype, device=device)).expand(batch, queries, heads).reshape(rows, 1)
    offset, row_step = start * heads + block, size[:, 0] * heads
    top, bottom = y0 * row_step + offset, y1 * row_step + offset
    x0, x1 = x0 * heads, x1 * heads
    # entries per row in (level, corner, point) order, the order this op has always summed in: another order
    # rounds differently, and 1500-iteration distillation runs then end about 1 AP apart per seed
    # (docs/bench_kd_results.md), so recorded runs would no longer reproduce
    columns = torch.stack([(a + b).view(rows, levels, points) for a, b in ((top, x0), (top, x1), (bottom, x0),
                                                                            (bottom, x1))], 2)
    weights = torch.stack([(a * b).view(rows, levels, points) for a, b in ((wy0, wx0), (wy0, wx1), (wy1, wx0),
                                                                            (wy1, wx1))], 2)
    weights = weights * attention_weights.reshape(rows, levels, 1, points)
    per_row = 4 * slots
    crow = torch.arange(0, rows * per_row + 1, per_row, dtype=torch.int32, device=device)
    with warnings.catch_warnings():  # CSR construction and its product are all this uses of the "beta" API
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        matrix = torch.sparse_csr_tensor(crow, columns.to(torch.int32).view(-1), weights.view(-1),
                                         size=(rows, batch * keys * heads), check_invariants=False)
    return (matrix @ value.reshape(batch * keys * heads, dims)).view(batch, queries, heads * dims)


def _dispatch(value, spatial_shapes, sampling_locations, attention_weights):
    tensors = (value, sampling_locations, attention_weights)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if needs_grad or torch.jit.is_tracing():
        return _DENSE(value, spatial_shapes, sampling_locations, attention_weights)
    if value.dtype in (torch.float32, torch.float64):
        return sparse_deformable_attention(value, spatial_shapes, sampling_locations, attention_weights)
    # Low-precision values: CSR products exist in float32 only, and the dense fallback ran slower than float32
    # does with the sparse product. The distiller's autocast teacher no longer arrives here in bf16 (its
    # float32_sampling hands this op float32, compress/distill/teacher_precision.py); other callers may.
    with torch.autocast(value.device.type, enabled=False):
        out = sparse_deformable_attention(value.float(), spatial_shapes, sampling_locations.float(),
                                          attention_weights.float())
    return out.to(value.dtype)


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
