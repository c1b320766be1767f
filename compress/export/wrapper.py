"""A fixed-signature deployable wrapper around an mmdet DETR-family detector, decoding inside the graph.

``model.predict()`` is not exportable (per-image Python loops, InstanceData), so the wrapper runs the same
steps as the training taps (``compress.distill.taps.forward_taps``) on one image shape and decodes like
RT-DETR / MMDeploy: sigmoid -> top-K over the flattened (queries x classes) scores -> label = index % C,
query = index // C -> gather boxes -> cxcywh to xyxy in input pixels, clamped to the image. No NMS.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from mmdet.structures import DetDataSample

from compress.distill.box_ops import cxcywh_to_xyxy
from compress.distill.taps import forward_taps, is_softmax_head


class DeployableDetector(nn.Module):
    """images (N, 3, H, W) normalised float32 -> boxes (N, K, 4), scores (N, K), labels (N, K) int64.

    With ``with_raw=True`` it also returns the last decoder stage's per-query class probabilities (N, Q, C)
    and boxes (N, Q, 4, normalised cxcywh), which tensor-level parity checks compare.
    """

    def __init__(self, detector: nn.Module, input_size: tuple[int, int], top_k: int = 100,
                 with_raw: bool = False):
        super().__init__()
        self.detector = detector.eval()
        self.height, self.width = input_size
        self.top_k = top_k
        self.with_raw = with_raw
        self.softmax = is_softmax_head(detector.bbox_head)
        # One sample describes every image: the batch is same-shape (the server resizes), so mmdet builds no
        # padding masks and the batch dimension stays dynamic in the graph.
        self.sample = DetDataSample(metainfo=dict(img_shape=input_size, batch_input_shape=input_size,
                                                  pad_shape=input_size, scale_factor=(1.0, 1.0)))

    def forward(self, images: torch.Tensor):
        taps = forward_taps(self.detector, images, [self.sample])
        cls_scores, boxes_cxcywh = taps.cls_scores[-1], taps.bbox_preds[-1]
        probs = cls_scores.softmax(-1)[..., :-1] if self.softmax else cls_scores.sigmoid()
        num_classes = probs.shape[-1]
        k = min(self.top_k, probs.shape[1] * num_classes)
        scores, index = probs.flatten(1).topk(k, dim=1)
        labels = index % num_classes
        query = torch.div(index, num_classes, rounding_mode="floor")
        boxes = torch.gather(boxes_cxcywh, 1, query.unsqueeze(-1).expand(-1, -1, 4))
        scale = boxes.new_tensor([self.width, self.height, self.width, self.height])
        boxes = cxcywh_to_xyxy(boxes) * scale
        boxes = torch.minimum(boxes.clamp(min=0), scale)
        if self.with_raw:
            return boxes, scores, labels, probs, boxes_cxcywh
        return boxes, scores, labels
