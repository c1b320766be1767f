"""Export: the deployable wrapper with in-graph decoding, ONNX export and its verification."""
