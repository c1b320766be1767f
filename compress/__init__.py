"""detrdistill: DETRDistill on mmdetection's DETR family, ONNX/TensorRT export and serving."""

__version__ = "0.1.0"
