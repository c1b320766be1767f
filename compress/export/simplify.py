"""Optional graph simplification (onnxslim), kept only if the simplified graph passes the same checks.

Measured before and after (node count, ONNX Runtime batch-1 latency) so the report shows what it bought.
"""

from __future__ import annotations

import os
from pathlib import Path

from compress.bench.stats import time_calls
from compress.export.onnx_export import OUTPUTS, ParityError
from compress.export.verify import ValImages, check_parity, coco_ap


def simplify_onnx(path: Path, detector, contract, images: ValImages, batch_sizes: tuple[int, ...],
                  ap_reference: float, ap_tolerance: float, runs: int = 30) -> dict:
    try:
        import onnxslim
    except ImportError:
        return {"applied": False, "reason": "onnxslim is not installed (`pip install onnxslim`)"}
    import onnx
    import onnxruntime as ort

    candidate = path.with_suffix(".slim.onnx")
    onnx.save(onnxslim.slim(str(path)), str(candidate))
    nodes = [len(onnx.load(str(p)).graph.node) for p in (path, candidate)]
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (path, candidate)]
    one = images.arrays[:1]
    latency = [time_calls(lambda s=s: s.run(["boxes"], {"images": one}), runs, warmup=3)["p50_ms"]
               for s in sessions]
    result = {"nodes_before_after": nodes, "ort_b1_p50_ms_before_after": latency}
    try:
        result["parity_max_abs_diff"] = check_parity(sessions[1], detector, contract, images, batch_sizes)
        ap = coco_ap(lambda b: sessions[1].run(list(OUTPUTS[:3]), {"images": b}), images, contract,
                     desc="AP simplified")["AP"]
        if abs(ap - ap_reference) > ap_tolerance:
            raise ParityError(f"simplified AP {ap} vs {ap_reference}")
    except ParityError as err:
        candidate.unlink()
        return {**result, "applied": False, "reason": f"simplification broke parity, kept the original: {err}"}
    os.replace(candidate, path)
    return {**result, "applied": True, "ap": ap}
