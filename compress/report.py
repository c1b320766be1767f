"""Result tables and training-curve plots (markdown tables on stdout, PNG via matplotlib's Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def render_table(rows: list[dict]) -> str:
    """A markdown table; columns are the union of the rows' keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def read_scalars(work_dir: str | Path) -> list[dict]:
    """mmengine's vis_data/scalars.json records of the newest run in ``work_dir`` (one dict per line)."""
    files = sorted(Path(work_dir).glob("*/vis_data/scalars.json"), key=lambda p: p.stat().st_mtime)
    records = []
    for path in files:  # a resumed run continues in a new timestamped folder
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def val_points(records: list[dict]) -> list[dict]:
    """The val records, each stamped with the iteration it followed (mmengine logs them with step 0 in
    iteration-based runs)."""
    val, last_iter = [], 0
    for r in records:
        if "loss" in r:
            last_iter = r["step"]
        elif "coco/bbox_mAP" in r:
            val.append({**r, "step": last_iter})
    return val


def plot_training_curves(work_dir: str | Path, out_png: str | Path) -> Path | None:
    """Loss terms and val AP against iteration; returns the PNG path (None when nothing was logged)."""
    records = read_scalars(work_dir)
    train = [r for r in records if "loss" in r]
    val = val_points(records)
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(11, 4))
    groups = {"total": ["loss"]}
    for key in train[-1]:
        if "loss" in key and key != "loss":
            kind = key.split("_")[1] if key.startswith("loss_") else ""
            groups.setdefault(kind if kind in ("lkd", "fkd", "qp") else "det", []).append(key)
    for name, keys in groups.items():
        ax_loss.plot([r["step"] for r in train], [sum(r.get(k, 0.0) for k in keys) for r in train], label=name)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    if val:
        ax_ap.plot([r["step"] for r in val], [100 * r["coco/bbox_mAP"] for r in val], marker="o", label="AP")
        ax_ap.plot([r["step"] for r in val], [100 * r["coco/bbox_mAP_50"] for r in val], marker="o", label="AP50")
        ax_ap.legend()
    ax_ap.set_xlabel("iteration")
    ax_ap.set_ylabel("val AP (0-100)")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
