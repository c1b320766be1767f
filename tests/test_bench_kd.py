"""The KD benchmark matrix on tiny models: every entry trains, the report is written, finished entries are
reused and a killed entry resumes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.run_helpers import run_cli, write_distill_config


def test_bench_kd_runs_reuses_and_resumes(tiny_pair, tmp_path):
    config = write_distill_config(tiny_pair, "benchkd", iters=2, val_interval=2, ckpt_interval=2)
    out = tmp_path / "bench"
    args = ("bench-kd", "--config", str(config), "--student-config", str(tiny_pair["student"]), "--seeds", "0",
            "--iters", "2", "--val-interval", "2", "--timing-iters", "2", "--timing-rounds", "2", "--entries",
            "baseline", "detrdistill", "mgd", "--out", str(out))
    first = run_cli(*args, "--jobs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "bench_kd.json").read_text())
    # --jobs 2: the first two runs trained side by side
    spans = [json.loads((out / f"{name}/seed0/bench_entry.json").read_text()) for name in ("baseline", "detrdistill")]
    assert max(r["started_at"] for r in spans) < min(r["started_at"] + r["wall_s"] for r in spans)
    assert set(report["rows"]) == {"baseline", "detrdistill", "mgd"}
    for row in report["rows"].values():
        assert set(row["mean"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"} and row["seeds"] == 1
        assert row["peak_rss_mb"] > 100 and row["curves"][0][-1][0] == 2  # val point at iteration 2
    assert report["rows"]["baseline"]["gain_ap"] == 0
    # the teacher's own evaluation (cached by `distill`) is a reference row of the same table
    teacher = json.loads((out / "detrdistill/seed0/metrics.json").read_text())["teacher"]
    assert report["teacher"] == {k: teacher[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    assert set(report["step_time_s"]) == {"student alone", "student + teacher forward (KD off)",
                                          "DETRDistill (one encoder pass)", "DETRDistill, teacher bf16 autocast",
                                          "DETRDistill, teacher encoder compiled",
                                          "DETRDistill, teacher compiled + bf16 autocast",
                                          "DETRDistill, teacher with mmcv's grid_sample attention",
                                          "official style (encoder twice)"}
    assert (out / "timing/student_teacher_forward_kd_off/round1").is_dir()
    for label, each in report["step_time_rounds_s"].items():  # two interleaved rounds, the median reported
        assert len(each) == 2 and report["step_time_s"][label] == sum(each) / 2
    assert "'autocast': 'bfloat16'" in (out / "configs/timing_detrdistill_teacher_bf16_autocast.py").read_text()
    assert "'compile': True" in (out / "configs/timing_detrdistill_teacher_encoder_compiled.py").read_text()
    both = (out / "configs/timing_detrdistill_teacher_compiled_bf16_autocast.py").read_text()
    assert "'compile': True" in both and "'autocast': 'bfloat16'" in both
    dense = out / "configs/timing_detrdistill_teacher_with_mmcv_s_grid_sample_attention.py"
    assert "'sparse_attention': False" in dense.read_text()
    assert report["step_time_vs_student"]["student alone"] == 1.0
    assert {t["target"] for t in report["targets"]} >= {"DETRDistill >= +2.5 AP over the student alone",
                                                        "DETRDistill beats mgd",
                                                        "DETRDistill step <= 1.1x (student step + teacher forward)"}
    table = (out / "bench_kd.md").read_text()
    lead = round(teacher["AP"] - report["rows"]["baseline"]["mean"]["AP"], 2)
    assert f"| teacher (reference) | {teacher['AP']} | {teacher['AP50']} |" in table and f"| {lead} | - | - |" in table
    assert "| detrdistill |" in table and "official style" in table and "median over rounds" in table
    assert (out / "bench_kd.png").stat().st_size > 5000
    config_text = (out / "configs/mgd_seed0.py").read_text()
    assert "'method': 'mgd'" in config_text and "randomness = dict(seed=0)" in config_text

    # A killed entry: its summary is gone but its checkpoint is there -> it resumes; the others are reused.
    entry = out / "mgd/seed0"
    (entry / "bench_entry.json").unlink()
    (entry / "metrics.json").unlink()
    shutil.rmtree(out / "timing")
    second = run_cli(*args[:args.index("--timing-rounds")], "--timing-rounds", "0", *args[args.index("--entries"):])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "ETA 0 min" not in second.stdout  # reused entries took no time: no ETA until one trains
    assert "--resume" not in (out / "baseline/seed0/bench.log").read_text()
    assert "Load checkpoint from" in (entry / "bench.log").read_text() or "resum" in (entry / "bench.log").read_text()
    again = json.loads((out / "bench_kd.json").read_text())
    assert again["rows"]["baseline"] == report["rows"]["baseline"]
    # --timing-rounds 0: the AP runs only, no step timed, the timing targets left out rather than judged.
    assert not (out / "timing").exists() and again["step_time_s"] == {} and again["step_time_rounds_s"] == {}
    assert {t["target"] for t in again["targets"]} == {t["target"] for t in report["targets"]
                                                       if "step" not in t["target"]}
    assert "step times not measured" in (out / "bench_kd.md").read_text()

    # Another schedule (or --config) into the same --out: refused before anything trains, not silently mixed.
    kept = (out / "baseline/seed0/bench_entry.json").read_text()
    longer = list(args)
    longer[longer.index("--iters") + 1] = "3"
    third = run_cli(*longer)
    assert third.returncode == 2 and "Traceback" not in third.stderr
    line = third.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {out / 'baseline/seed0'} holds a run of another config") and "another --out" in line
    assert (out / "baseline/seed0/bench_entry.json").read_text() == kept


def test_bench_kd_refuses_unknown_entries(tmp_path):
    res = run_cli("bench-kd", "--entries", "fgd", "--out", str(tmp_path))
    assert res.returncode == 2 and "unknown bench-kd entries ['fgd']" in res.stderr
    assert "detrdistill_contrastive" in res.stderr  # the opt-in entry is offered too


def test_opt_in_contrastive_entry_is_the_full_method_plus_the_term(tmp_path):
    from mmengine.config import Config

    from compress.bench.kd_matrix import ALL_ENTRIES, ENTRIES, derived_config

    base = tmp_path / "distill.py"
    base.write_text("model = dict(logits_kd=dict(enable=True), feature_kd=dict(enable=True), "
                    "query_prior=dict(enable=True))\n")
    cfg = Config.fromfile(str(derived_config(tmp_path / "c.py", str(base), ALL_ENTRIES["detrdistill_contrastive"],
                                             4, 2, 0)))
    assert cfg.model.contrastive_kd.enable
    assert cfg.model.logits_kd.enable and cfg.model.feature_kd.enable and cfg.model.query_prior.enable
    assert "detrdistill_contrastive" not in ENTRIES  # not trained unless named in --entries


def test_components_stay_alone_on_a_config_that_enables_the_contrastive_term(tmp_path):
    from mmengine.config import Config

    from compress.bench.kd_matrix import ENTRIES, KD_OFF, derived_config

    base = tmp_path / "distill.py"
    base.write_text("model = dict(logits_kd=dict(enable=True), feature_kd=dict(enable=True), "
                    "query_prior=dict(enable=True), contrastive_kd=dict(enable=True))\n")

    def enabled(switches) -> set[str]:
        model = Config.fromfile(str(derived_config(tmp_path / "c.py", str(base), switches, 4, 2, 0))).model
        return {k for k in ("logits_kd", "feature_kd", "query_prior", "contrastive_kd") if model[k]["enable"]}

    assert enabled(ENTRIES["logits_only"]) == {"logits_kd"}
    assert enabled(ENTRIES["feature_only"]) == enabled(ENTRIES["fitnet"]) == enabled(ENTRIES["mgd"]) == {"feature_kd"}
    assert enabled(ENTRIES["query_prior_only"]) == {"query_prior"}
    assert enabled(KD_OFF) == set()
    assert enabled(ENTRIES["detrdistill"]) == {"logits_kd", "feature_kd", "query_prior", "contrastive_kd"}


@pytest.mark.parametrize(("flag", "value", "message"),
                         [("--timing-rounds", "-1", "--timing-rounds must be >= 0, got -1"),
                          ("--jobs", "0", "--jobs must be >= 1, got 0")])
def test_bench_kd_refuses_bad_counts(tmp_path, flag, value, message):
    res = run_cli("bench-kd", flag, value, "--out", str(tmp_path))
    assert res.returncode == 2 and message in res.stderr


def test_side_by_side_runs_share_the_cores_unless_threads_are_set():
    from compress.bench.kd_matrix import job_env

    assert job_env({"A": "1"}, 2, cores=2) == {"A": "1", "OMP_NUM_THREADS": "1"}
    assert job_env({}, 3, cores=16)["OMP_NUM_THREADS"] == "5"
    assert job_env({}, 4, cores=2)["OMP_NUM_THREADS"] == "1"  # never 0 threads
    assert job_env({"OMP_NUM_THREADS": "2"}, 2, cores=2)["OMP_NUM_THREADS"] == "2"  # the caller's choice
    assert "OMP_NUM_THREADS" not in job_env({}, 1, cores=2)  # one run: torch's default (all cores)


def test_peers_keep_their_own_weight_and_levels_while_detrdistill_takes_the_configs(tmp_path):
    """A distill config tuned to feature_kd.weight=5 on the finest level, ramped to zero, scales, places and
    schedules DETRDistill's masked loss, not FitNet's or MGD's: they run at their own constant weight on every
    level (the other hooks kept)."""
    from mmengine.config import Config

    from compress.bench.kd_matrix import ENTRIES, PEER_WEIGHT, PEERS, derived_config, unscheduled_hooks

    base = tmp_path / "distill.py"
    ramp = "dict(type='LossWeightScheduleHook', section='feature_kd', until_iter=None, decay='linear')"
    base.write_text("model = dict(feature_kd=dict(enable=True, weight=5.0, method='detrdistill', levels=[0]))\n"
                    f"custom_hooks = [dict(type='NaNLossHook'), {ramp}]\n")
    settings = {}
    for name in ("feature_only", "fitnet", "mgd"):
        hooks = unscheduled_hooks(str(base)) if name in PEERS else None  # as run_bench_kd builds them
        cfg = Config.fromfile(str(derived_config(tmp_path / f"{name}.py", str(base), ENTRIES[name], 4, 2, 0, hooks)))
        kd = cfg.model.feature_kd
        settings[name] = (kd.weight, kd.method, kd.levels, [h["type"] for h in cfg.custom_hooks])
    assert settings == {"feature_only": (5.0, "detrdistill", [0], ["NaNLossHook", "LossWeightScheduleHook"]),
                        "fitnet": (PEER_WEIGHT, "fitnet", None, ["NaNLossHook"]),
                        "mgd": (PEER_WEIGHT, "mgd", None, ["NaNLossHook"])}
    assert set(PEERS) == {"fitnet", "mgd"} <= set(ENTRIES)


def test_profile_tool_splits_the_step(tiny_pair):
    """tools/profile_kd_step.py: every variant timed, and the full step's sections nest inside its forward."""
    import re
    import subprocess
    import sys

    from tests.run_helpers import REPO, subprocess_env

    config = write_distill_config(tiny_pair, "profile", iters=2, val_interval=2, ckpt_interval=2)
    res = subprocess.run([sys.executable, "tools/profile_kd_step.py", "--config", str(config), "--batches", "1",
                          "--rounds", "1"], capture_output=True, text=True, timeout=600, cwd=REPO,
                         env=subprocess_env())
    assert res.returncode == 0, res.stderr[-3000:]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \|", res.stdout, flags=re.M))
    assert {"KD off (student + teacher forward)", "student alone", "logits KD only", "feature KD only",
            "query prior only", "DETRDistill (all three)", "DETRDistill, teacher bf16 autocast",
            "official style (encoder twice)", "DETRDistill, teacher outputs cached (all hits)"} <= set(rows)
    assert "device: cpu" in res.stdout and float(rows["KD off (student + teacher forward)"]) > 0
    sections = ["teacher_forward", "teacher_targets", "logits_kd", "feature_kd", "query_prior"]
    assert all(float(rows[s]) > 0 for s in [*sections, "backward"])
    assert sum(float(rows[s]) for s in sections) < float(rows["forward + losses"])


def test_profile_tool_times_a_pair_without_its_weights(tiny_pair):
    """--random-init: the teacher checkpoint and a pretrained backbone that --cfg-options names (both missing
    files) are never read, so paper-size pairs are profiled without COCO training or a download."""
    import subprocess
    import sys

    from tests.run_helpers import REPO, subprocess_env

    config = write_distill_config(tiny_pair, "profile_random", iters=2, val_interval=2, ckpt_interval=2)
    student = tiny_pair["root"] / "student_pretrained.py"
    student.write_text(f"_base_ = ['{tiny_pair['student']}']\n"
                       "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='missing.pth')))\n")
    command = [sys.executable, "tools/profile_kd_step.py", "--config", str(config), "--batches", "1", "--rounds", "1",
               "--variants", "student alone", "--cfg-options", f"model.student.config={student}",
               f"model.teacher.checkpoint={tiny_pair['root'] / 'missing_teacher.pth'}"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=600, cwd=REPO,
                              env=subprocess_env())

    assert "missing_teacher.pth" in run().stderr  # without the flag the missing teacher stops it
    res = run("--random-init")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| DETRDistill (all three) |" in res.stdout and "| student alone |" in res.stdout


def test_profile_tool_random_teacher_is_initialised(tiny_pair, tmp_path):
    """mmdet allocates DETR's level_embed with torch.Tensor(...) and fills it only in init_weights(); a random
    teacher saved before that kept whatever memory it got, now and then NaN or 1e38 (a flaky profile run)."""
    from mmengine.config import Config

    from tools.profile_kd_step import with_random_weights

    model_cfg = Config.fromfile(str(write_distill_config(tiny_pair, "random_teacher", 2, 2, 2))).model.to_dict()
    for _ in range(3):  # uninitialised memory reads differently from call to call
        with_random_weights(model_cfg, tmp_path)
        level_embed = torch.load(tmp_path / "random_teacher.pth")["level_embed"]
        assert torch.isfinite(level_embed).all() and 0.5 < float(level_embed.std()) < 2  # normal_(), as mmdet inits


def test_profile_tool_splits_the_variant_it_is_asked_for(tiny_pair):
    """--sections-of: the sections come from that variant's step (here the bf16 teacher's), which is timed
    even when --variants does not list it; a variant without a distiller is refused. --teacher-ops N splits
    that variant's teacher forward by operator: the N costliest by self time, in that order, then the sum over
    all operators (self times do not overlap, so it bounds the listed ones); a count below 1 is refused."""
    import re
    import subprocess
    import sys

    from tests.run_helpers import REPO, subprocess_env

    config = write_distill_config(tiny_pair, "profile_sections", iters=2, val_interval=2, ckpt_interval=2)
    command = [sys.executable, "tools/profile_kd_step.py", "--config", str(config), "--batches", "1", "--rounds",
               "1", "--variants", "student alone", "--sections-of"]
    bf16 = "DETRDistill, teacher bf16 autocast"
    res = subprocess.run([*command, bf16, "--teacher-ops", "4"], capture_output=True, text=True, timeout=600,
                         cwd=REPO, env=subprocess_env())
    assert res.returncode == 0, res.stderr[-3000:]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \|", res.stdout, flags=re.M))
    assert float(rows[bf16]) > 0 and "DETRDistill (all three)" not in rows
    assert f"| {bf16}: section | ms/step |" in res.stdout and float(rows["teacher_forward"]) > 0
    ops = re.findall(r"^\| ([^|]+?) \| ([^|]*?) \| ([0-9.]+) \| ([0-9.]+) \|$",
                     res.stdout.split(f"| {bf16}: teacher forward, operator |")[1], flags=re.M)
    assert len(ops) == 5 and ops[-1][0] == "all ops", ops
    listed = [float(ms) for _, _, ms, _ in ops[:-1]]
    assert listed == sorted(listed, reverse=True) and 0 < sum(listed) <= float(ops[-1][2])
    assert any(name == "aten::addmm" and "[" in shapes for name, shapes, _, _ in ops[:-1]), ops  # linear layers
    refused = subprocess.run([*command, "student alone"], capture_output=True, text=True, timeout=600, cwd=REPO,
                             env=subprocess_env())
    assert refused.returncode == 2 and "--sections-of: invalid choice: 'student alone'" in refused.stderr
    refused = subprocess.run([*command, bf16, "--teacher-ops", "0"], capture_output=True, text=True, timeout=600,
                             cwd=REPO, env=subprocess_env())
    assert refused.returncode == 2 and "--teacher-ops: needs a count of 1 or more, got 0" in refused.stderr


def test_gain_is_taken_from_unrounded_means():
    """Three seeds whose mean AP is 3.6333: the baseline's gain is exactly 0 (no "-0.0"), the others' gain
    is the difference of unrounded means."""
    from compress.bench.kd_matrix import METRICS, summarize

    def run(ap):
        return {"metrics": dict.fromkeys(METRICS, ap), "peak_rss_mb": 100.0, "curve": []}

    report = summarize({"baseline": [run(3.8), run(2.5), run(4.6)], "detrdistill": [run(6.1), run(4.9), run(5.0)]},
                       {}, [0, 1, 2], 10)
    assert str(report["rows"]["baseline"]["gain_ap"]) == "0.0"
    assert report["rows"]["detrdistill"]["gain_ap"] == 1.7 and report["rows"]["detrdistill"]["mean"]["AP"] == 5.33
    # paired by seed: 6.1 - 3.8, 4.9 - 2.5, 5.0 - 4.6
    assert report["rows"]["detrdistill"]["gain_ap_per_seed"] == [2.3, 2.4, 0.4]
    assert str(report["rows"]["baseline"]["gain_ap_per_seed"]) == "[0.0, 0.0, 0.0]"
    from compress.bench.kd_report import kd_table

    assert "| 1.7 | +2.3, +2.4, +0.4 |" in kd_table(report)
    # paired SE of 2.3, 2.4, 0.4: sd 1.127 / sqrt(3) = 0.65; the mean 1.7 is more than twice that
    assert ("- DETRDistill >= +2.5 AP over the student alone: 1.7 (MISSED; 3 of 3 seeds above the baseline; "
            "paired SE 0.65)" in kd_table(report))
    one_seed = summarize({"baseline": [run(3.8), run(2.5), run(4.6)], "query_prior_only": [run(8.0), run(2.0),
                                                                                          run(4.0)]}, {}, [0, 1, 2], 10)
    # a peer is beaten seed by seed too: 6.1 - 6.0, 4.9 - 5.3, 5.0 - 4.0 (sd 0.709 / sqrt(3) = 0.41)
    peer = summarize({"baseline": [run(3.8), run(2.5), run(4.6)], "detrdistill": [run(6.1), run(4.9), run(5.0)],
                      "fitnet": [run(6.0), run(5.3), run(4.0)]}, {}, [0, 1, 2], 10)
    # a positive margin inside twice its standard error is "not shown", neither met nor missed
    assert ("- DETRDistill beats fitnet: 0.23 (not shown; 2 of 3 seeds above fitnet; paired SE 0.41, within 2 SE "
            "of zero)" in kd_table(peer))
    assert [t["met"] for t in peer["targets"]] == [False, False]
    # gains 4.2, -0.5, -0.6: sd 2.743 / sqrt(3) = 1.58, and the mean 1.03 is inside twice that
    assert ("- query_prior_only alone is positive: 1.03 (not shown; 1 of 3 seeds above the baseline; paired SE 1.58, "
            "within 2 SE of zero)" in kd_table(one_seed))
    # the same per-seed gains as detrdistill's above (mean 1.7, SE 0.65): outside twice the SE, met
    shown = summarize({"baseline": [run(3.8), run(2.5), run(4.6)], "logits_only": [run(6.1), run(4.9), run(5.0)],
                       "feature_only": [run(3.7), run(2.5), run(4.6)]}, {}, [0, 1, 2], 10)
    assert ("- logits_only alone is positive: 1.7 (met; 3 of 3 seeds above the baseline; paired SE 0.65)"
            in kd_table(shown))
    # a negative mean is missed whatever its SE (-0.03: -0.1, 0, 0)
    assert ("- feature_only alone is positive: -0.03 (MISSED; 0 of 3 seeds above the baseline; paired SE 0.03, "
            "within 2 SE of zero)" in kd_table(shown))


def test_step_verdicts_show_the_same_round_ratios():
    """A round that slows every entry moves the medians' ratio; the ratio within each round cancels it."""
    from compress.bench.kd_matrix import FLOOR, summarize
    from compress.bench.kd_report import kd_table

    rounds = {"student alone": [0.20, 0.30, 0.20], FLOOR: [0.35, 0.50, 0.34],
              "DETRDistill (one encoder pass)": [0.40, 0.50, 0.36],
              "official style (encoder twice)": [0.50, 0.80, 0.62],
              "DETRDistill, teacher compiled + bf16 autocast": [0.30, 0.42, 0.33]}
    timing = {label: float(sorted(values)[1]) for label, values in rounds.items()}
    report = summarize({}, timing, [0], 10, rounds)
    table = kd_table(report)
    # medians 0.62 / 0.40 = 1.55; per round 0.50/0.40, 0.80/0.50, 0.62/0.36 = 1.25, 1.60, 1.72
    assert ("- DETRDistill step >= 1.5x faster than the official-style step: 1.55 (met; per round 1.25, 1.60, "
            "1.72; median 1.60)") in table
    # medians 0.40 / 0.35 = 1.14; per round 0.40/0.35, 0.50/0.50, 0.36/0.34 = 1.14, 1.00, 1.06
    assert ("- DETRDistill step <= 1.1x (student step + teacher forward): 1.14 (MISSED; per round 1.14, 1.00, "
            "1.06; median 1.06)") in table
    # the stretch names the cheapest DETRDistill step: medians 0.33 / 0.20 = 1.65 (the one-pass step: 2.0);
    # per round 0.30/0.20, 0.42/0.30, 0.33/0.20 = 1.50, 1.40, 1.65
    assert ("- DETRDistill step below 1.5x the student alone (stretch, fastest teacher variant): 1.65 (MISSED; "
            "DETRDistill, teacher compiled + bf16 autocast; per round 1.50, 1.40, 1.65; median 1.50)") in table
    one_round = summarize({}, timing, [0], 10, {label: values[:1] for label, values in rounds.items()})
    assert "per round" not in kd_table(one_round)


def test_gpu_runs_report_the_cards_peak_memory_next_to_the_rss():
    """mmengine logs ``memory`` (CUDA max_memory_allocated, MB) with each training line on a GPU; the matrix
    takes the training lines' peak, leaves val lines out, and adds a column only when the runs measured it."""
    from compress.bench.kd_matrix import METRICS, peak_gpu_mb, summarize
    from compress.bench.kd_report import kd_table

    records = [{"loss": 1.0, "memory": 300, "step": 10}, {"loss": 0.9, "memory": 420, "step": 20},
               {"coco/bbox_mAP": 0.1, "memory": 900, "step": 0}, {"loss": 0.8, "memory": 410, "step": 30}]
    assert peak_gpu_mb(records) == 420.0
    assert peak_gpu_mb([{"loss": 1.0, "step": 10}]) is None  # a CPU run logs no memory

    def run(ap, gpu):
        return {"metrics": dict.fromkeys(METRICS, ap), "peak_rss_mb": 100.0, "peak_gpu_mb": gpu, "curve": []}

    report = summarize({"baseline": [run(3.0, 400.0), run(4.0, 420.0)],
                        "detrdistill": [run(5.0, 610.0), run(6.0, 620.0)]}, {}, [0, 1], 10)
    assert report["rows"]["detrdistill"]["peak_gpu_mb"] == 615.0
    assert report["rows"]["detrdistill"]["peak_gpu_vs_baseline"] == 1.5
    table = kd_table(report)
    assert "| peak RSS vs baseline | peak GPU memory vs baseline |" in table
    assert "| 2.0 | +2.0, +2.0 | 1.0 | 1.5 |" in table
    cpu = summarize({"baseline": [run(3.0, None)], "detrdistill": [run(5.0, None)]}, {}, [0], 10)
    assert "peak_gpu_mb" not in cpu["rows"]["detrdistill"] and "GPU memory" not in kd_table(cpu)


def test_runs_keep_the_callers_pythonpath_behind_the_checkout():
    """A stack installed with ``pip --target`` is reachable only through PYTHONPATH (on the H100 image the runs
    failed with "No module named 'mmengine'" while it was replaced by the checkout alone)."""
    import os

    from compress.bench.kd_matrix import with_repo_on_path
    from tests.run_helpers import REPO

    assert with_repo_on_path("/opt/site") == f"{REPO}{os.pathsep}/opt/site"
    assert with_repo_on_path(None) == with_repo_on_path("") == str(REPO)


def test_figure_shows_each_seed_the_gain_and_the_step_cost():
    """The PNG's middle panel is the table's AP (bar = mean, one dot per seed, the gain written over it); its
    right panel the step-time ratios with the KD-off floor marked; without timing, the two AP panels alone."""
    from compress.bench.kd_matrix import METRICS, summarize
    from compress.bench.kd_report import kd_figure

    def run(ap):
        return {"metrics": dict.fromkeys(METRICS, ap), "peak_rss_mb": 100.0, "curve": [[5, ap / 2], [10, ap]]}

    timing = {"student alone": 0.2, "student + teacher forward (KD off)": 0.35, "DETRDistill (one encoder pass)": 0.4}
    report = summarize({"baseline": [run(2.0), run(3.0)], "detrdistill": [run(5.0), run(4.0)]}, timing, [0, 1], 10)
    timed = kd_figure(report)
    curves, ap_ax, step_ax = timed.axes
    assert [bar.get_height() for bar in ap_ax.patches] == [2.5, 4.5]
    assert [list(dots.get_offsets()[:, 1]) for dots in ap_ax.collections] == [[2.0, 3.0], [5.0, 4.0]]
    assert [t.get_text() for t in ap_ax.texts] == ["+2.0"]
    assert [line.get_ydata()[-1] for line in curves.lines[:2]] == [2.5, 4.5]  # mean curve ends at the mean AP
    assert [bar.get_width() for bar in step_ax.patches] == [1.0, 1.75, 2.0]
    assert 1.75 in {line.get_xdata()[0] for line in step_ax.lines}  # the floor
    untimed = kd_figure(summarize({"baseline": [run(2.0)]}, {}, [0], 10))
    assert [ax.get_ylabel() for ax in untimed.axes] == ["val AP (0-100)", "final val AP (0-100)"]  # no blank third
    assert untimed.get_figwidth() < 0.7 * timed.get_figwidth()
