"""Latency benchmark reports: JSON with everything, a markdown table, a PNG of latency against AP."""

from __future__ import annotations

import json
from pathlib import Path


def latency_table(result: dict) -> str:
    m = result["machine"]
    lines = [f"Latency on {m['cpu']} ({m['cores']} cores), torch {result['libraries']['torch']}, onnxruntime "
             f"{result['libraries']['onnxruntime']}, {result['runs']} timed runs after {result['warmup']} warm-up; "
             f"AP on {next(iter(result['models'].values()))['ap_val_images']} val images", "",
             "| model | backend | batch | params (M) | GFLOPs | AP | model p50 ms | p90 | p99 | img/s | "
             "end-to-end p50 ms | p99 | img/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mo, e2e = r["model_only"], r["end_to_end"]
        ap = r["ap"] if r["ap"] is not None else "n/a"
        lines.append(f"| {r['model']} | {r['backend']} | {r['batch']} | {r['params_m']} | {r['gflops'] or 'n/a'} | "
                     f"{ap} | {mo['p50_ms']} | {mo['p90_ms']} | {mo['p99_ms']} | "
                     f"{mo['throughput_per_s']} | {e2e['p50_ms']} | {e2e['p99_ms']} | {e2e['throughput_per_s']} |")
    lines.append("")
    for t in result["targets"]:
        lines.append(f"- {t['target']}: {t['measured']}x ({'met' if t['met'] else 'MISSED'})")
    return "\n".join(lines)


def write_latency_reports(result: dict, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    table = latency_table(result)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    out.with_suffix(".md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    markers = {"pytorch": "o", "onnxruntime": "s", "tensorrt-fp16": "^"}
    colours = {}
    batch1 = [r for r in result["rows"] if r["batch"] == 1]
    for r in batch1:
        colour = colours.setdefault(r["model"], f"C{len(colours)}")
        if r["ap"] is not None:
            left.scatter(r["model_only"]["p50_ms"], r["ap"], marker=markers.get(r["backend"], "x"), color=colour,
                         s=70, label=f"{r['model']} / {r['backend']}")
    left.set_xlabel("latency p50, batch 1, model only (ms)")
    left.set_ylabel("COCO AP")
    left.set_title("AP vs latency")
    left.legend(fontsize=8)
    labels = [f"{r['model']}\n{r['backend']}\nb{r['batch']}" for r in result["rows"]]
    x = range(len(labels))
    right.bar([i - 0.2 for i in x], [r["model_only"]["p50_ms"] / r["batch"] for r in result["rows"]], 0.4,
              label="model only")
    right.bar([i + 0.2 for i in x], [r["end_to_end"]["p50_ms"] / r["batch"] for r in result["rows"]], 0.4,
              label="end to end")
    right.set_xticks(list(x), labels, fontsize=7)
    right.set_ylabel("p50 ms per image")
    right.set_title("latency per image")
    right.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)
    return table
