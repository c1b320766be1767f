"""HTTP serving of an exported detector: FastAPI app, micro-batching, limits, metrics and a web page."""
