"""The KD benchmark's table (markdown), figure (AP curves, final AP per seed, step cost: PNG) and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from compress.bench.kd_matrix import FLOOR, METRICS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    # the evidence behind a verdict: seeds won for an AP target, same-round ratios for a step-time one
    lines += [f"- {t['target']}: {t['measured']} ({t['verdict']}"
              + "".join(f"; {t[key]}" for key in ("seeds_won", "variant", "rounds") if t.get(key)) + ")"
              for t in report["targets"]]
    return "\n".join(lines)


def write_kd_reports(report: dict, out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    table = kd_table(report)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    kd_figure(report).savefig(out.with_suffix(".png"), dpi=120)
    return table


def kd_figure(report: dict) -> Figure:
    """Curves, final AP and step cost in one picture: a gain reads only next to its seed spread and its price.

    Left: val AP against iteration, mean over seeds with the min-max band. Middle: final AP per entry (bar:
    mean; dots: each seed; the teacher dashed). Right, when the timing phase ran: each timed step relative to
    the student alone (the KD-off floor dotted); without it the picture is the two AP panels, not a blank third.
    """
    from matplotlib.figure import Figure  # no pyplot: nothing global to select or close

    rows, teacher = report["rows"], report.get("teacher")
    ratios = report.get("step_time_vs_student", {})
    widths = [5, 4, 5] if ratios else [5, 4]  # curves, final AP, step cost
    fig = Figure(figsize=(1.3 * sum(widths), 5.5), layout="constrained")
    axes = fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths})
    curve_ax, ap_ax = axes[:2]
    colours = {name: f"C{k}" for k, name in enumerate(rows)}
    for name, row in rows.items():
        curves = [c for c in row["curves"] if c]
        if not curves:
            continue
        steps = [s for s, _ in curves[0]]
        points = [[c[i][1] for c in curves if i < len(c)] for i in range(len(steps))]
        curve_ax.plot(steps, [sum(p) / len(p) for p in points], marker="o", color=colours[name], label=name)
        if len(curves) > 1:
            curve_ax.fill_between(steps, [min(p) for p in points], [max(p) for p in points], color=colours[name],
                                  alpha=0.12, linewidth=0)
    curve_ax.set(xlabel="iteration", ylabel="val AP (0-100)", title="AP during training (mean, min-max over seeds)")

    names = list(rows)
    ap_ax.bar(range(len(names)), [rows[n]["mean"]["AP"] for n in names], color=[colours[n] for n in names])
    for k, name in enumerate(names):
        seeds = rows[name].get("ap_per_seed", [])
        ap_ax.scatter([k] * len(seeds), seeds, color="black", s=12, zorder=3)
        if "gain_ap" in rows[name] and name != "baseline":
            ap_ax.annotate(f"{rows[name]['gain_ap']:+}", (k, max([rows[name]["mean"]["AP"], *seeds])),
                           textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ap_ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ap_ax.set(ylabel="final val AP (0-100)",
              title=f"final AP after {report['iterations']} it (dots: seeds; gain over baseline)")

    if teacher:
        for ax in (curve_ax, ap_ax):
            ax.axhline(teacher["AP"], color="grey", linestyle="--", label="teacher")
    curve_ax.legend(fontsize=7)

    if ratios:
        step_ax = axes[2]
        labels = list(ratios)
        step_ax.barh(range(len(labels)), [ratios[k] for k in labels], color="C7")
        step_ax.set_yticks(range(len(labels)), labels, fontsize=8)
        step_ax.invert_yaxis()
        for k, label in enumerate(labels):
            step_ax.annotate(f"{ratios[label]:.2f}x", (ratios[label], k), textcoords="offset points",
                             xytext=(3, -3), fontsize=8)
        step_ax.axvline(1.0, color="black", linewidth=0.8)
        floor = ratios.get(FLOOR)
        if floor:
            step_ax.axvline(floor, color="black", linestyle=":", linewidth=0.8)
        step_ax.set(xlabel="s/step vs the student alone (median over rounds)", title="training step cost")
    return fig
