"""The KD benchmark's table (markdown), AP-vs-iteration curves (PNG) and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from compress.bench.kd_matrix import METRICS


def kd_table(report: dict) -> str:
    # runs on a GPU add the card's peak memory: there the RSS counts only the host side
    gpu = any("peak_gpu_mb" in row for row in report["rows"].values())
    memory = ["peak RSS vs baseline"] + (["peak GPU memory vs baseline"] if gpu else [])
    lines = [f"KD benchmark: {report['iterations']} iterations, seeds {report['seeds']} (mean +- std)", "",
             "| entry | " + " | ".join([*METRICS, "gain AP", "gain per seed", *memory]) + " |",
             "|---|" + "---|" * (len(METRICS) + 2 + len(memory))]
    teacher, base = report.get("teacher"), report["rows"].get("baseline")
    if teacher:  # the reference every student row is distilled from; "gain" is its lead over the student alone
        lead = round(teacher["AP"] - base["mean"]["AP"], 2) if base else "-"
        lines.append("| teacher (reference) | " + " | ".join(str(teacher[k]) for k in METRICS) + f" | {lead} | - |"
                     + " - |" * len(memory))
    for name, row in report["rows"].items():
        cells = [f"{row['mean'][k]} +- {row['std'][k]}" for k in METRICS]
        per_seed = ", ".join(f"{g:+}" for g in row.get("gain_ap_per_seed", [])) or "-"
        ratios = [row.get("peak_rss_vs_baseline", "-")] + ([row.get("peak_gpu_vs_baseline", "-")] if gpu else [])
        lines.append(f"| {name} | " + " | ".join([*cells, str(row.get("gain_ap", "-")), per_seed, *map(str, ratios)])
                     + " |")
    rounds = report.get("step_time_rounds_s", {})
    if not report["step_time_s"]:
        lines += ["", "(step times not measured: --timing-rounds 0)"]
    else:
        lines += ["", "| training step | s/step (median over rounds) | vs student alone | each round |",
                  "|---|---|---|---|"]
    for label, seconds in report["step_time_s"].items():
        each = ", ".join(f"{v:.3f}" for v in rounds.get(label, []))
        lines.append(f"| {label} | {seconds:.4f} | {report['step_time_vs_student'].get(label, '-')} | {each} |")
    lines.append("")
    lines += [f"- {t['target']}: {t['measured']} ({'met' if t['met'] else 'MISSED'}"
              + (f"; {t['seeds_won']})" if t.get("seeds_won") else ")") for t in report["targets"]]
    return "\n".join(lines)


def write_kd_reports(report: dict, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    table = kd_table(report)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in report["rows"].items():
        curves = [c for c in row["curves"] if c]
        if not curves:
            continue
        steps = [s for s, _ in curves[0]]
        mean = [sum(c[i][1] for c in curves if i < len(c)) / len(curves) for i in range(len(steps))]
        ax.plot(steps, mean, marker="o", label=name)
    if report.get("teacher"):
        ax.axhline(report["teacher"]["AP"], color="grey", linestyle="--", label="teacher")
    ax.set_xlabel("iteration")
    ax.set_ylabel("val AP (0-100), mean over seeds")
    ax.set_title("student AP during training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)
    return table
