"""DINO at any embedding width.

mmdet 3.3's DINO decoder encodes its 4-d reference boxes with ``coordinate_to_encoding`` at a fixed
128 features per coordinate (512 in all) but sizes the MLP that reads them as ``2 * embed_dims``; the
two agree only at 256-d, so a 128-d DINO crashes on its first forward. A compact DINO is the natural
CPU student, so this subclass sizes that MLP from the encoding's real width. At 256-d it builds exactly
mmdet's DINO (same parameters, same state-dict keys).
"""

from __future__ import annotations

from mmdet.models.detectors import DINO
from mmdet.models.layers.transformer.utils import MLP
from mmdet.registry import MODELS

# coordinate_to_encoding's default: 128 sine/cosine features for each of the 4 box coordinates
REFERENCE_ENCODING_DIMS = 4 * 128


@MODELS.register_module()
class AnyWidthDINO(DINO):
    def _init_layers(self) -> None:
        super()._init_layers()
        if self.embed_dims * 2 != REFERENCE_ENCODING_DIMS:
            self.decoder.ref_point_head = MLP(REFERENCE_ENCODING_DIMS, self.embed_dims, self.embed_dims, 2)
