"""The benchmark scripts end to end at toy size: they run, and print and write what they measured."""

import json

import pytest
import re
import sys

from conftest import ROOT, run_script
from modeling_stretchysnake.selective_scan_fused import triton_available


def test_flexibility_benchmark_runs_end_to_end(tmp_path):
    """bench/flexibility.py with two runs of two steps: it trains, evaluates and prints its comparison."""
    result = run_script([sys.executable, str(ROOT / "bench" / "flexibility.py"), "--runs", "fixed", "static_tokens",
                         "--steps", "2", "--train_per_class", "2", "--eval_per_class", "1", "--eval_frames", "2",
                         "--eval_resolutions", "56", "112", "--output_dir", str(tmp_path / "flex")], tmp_path)
    assert "static_tokens vs fixed: grid mean" in result.stdout and "points lost at its worst other cell" in result.stdout
    assert "best variant on this budget: static_tokens" in result.stdout
    summary = json.loads((tmp_path / "flex" / "summary_seed0.json").read_text())
    assert set(summary) == {"fixed", "static_tokens"} and set(summary["fixed"]) == {"2x56", "2x112"}


def test_scaling_benchmark_prints_its_tables(tmp_path):
    """bench/scaling.py on a tiny grid (fresh subprocess per cell): timings, memory, GFLOPs and the growth lines."""
    rows_file = tmp_path / "rows.json"
    result = run_script([sys.executable, str(ROOT / "bench" / "scaling.py"), "--frames", "1", "2", "--resolutions", "32",
                         "--modes", "fwd", "--repeats", "2", "--json", str(rows_file)], tmp_path)
    rows = json.loads(rows_file.read_text())
    assert len(rows) == 6 and not any("error" in row for row in rows)
    assert all(row["seconds"] > 0 and row["gflops"] > 0 and 1 <= row["passes_timed"] <= 2 for row in rows)
    ours = {row["frames"]: row["gflops"] for row in rows if row["model"] == "stretchysnake" and row["resolution"] == 224}
    assert ours[2] > 1.9 * ours[1]  # linear in tokens
    assert "seconds (224 px):" in result.stdout and "gflops (8 frames):" in result.stdout


def test_scan_benchmark_prints_speedups_and_agreement(tmp_path):
    result = run_script([sys.executable, str(ROOT / "bench" / "scan.py"), "--length", "70", "--d-inner", "8",
                         "--repeats", "1", "--batches", "1", "2", "--reference-backward-batches", "1", "2"], tmp_path)
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("cpu ")]
    expected = [(batch, decay, pass_name, backend) for batch in ("1", "2") for decay in ("small", "large")
                for pass_name in ("fwd", "fwd+bwd") for backend in ("reference", "chunked", "numba")]
    assert [tuple(row[1:5]) for row in rows] == expected
    assert all(float(row[-1]) < 1e-5 for row in rows)  # max relative deviation from the reference
    assert "numba first call" in result.stdout


def test_learning_benchmark_compares_runs_on_the_same_clips(tmp_path):
    result = run_script([sys.executable, str(ROOT / "bench" / "learning.py"), "--runs", "ours", "videomae",
                         "ours_mean_pooling", "ours_task_quiet", "--steps", "2", "--train_per_class", "2",
                         "--eval_per_class", "1", "--frames", "2", "--resolution", "14", "--data_root",
                         str(tmp_path / "data"), "--output", str(tmp_path / "learning.json")], tmp_path)
    rows = json.loads((tmp_path / "learning.json").read_text())
    assert set(rows) == {"ours", "videomae", "ours_mean_pooling", "ours_task_quiet"}
    assert all(0 <= row["top1"] <= 100 and row["final_loss"] > 0 for row in rows.values())
    assert {path.name for path in (tmp_path / "data").iterdir()} == {"default_2x1_seed0", "quiet_2x1_seed0"}  # one per task
    assert "ours_mean_pooling" in result.stdout.splitlines()[-2]


def test_token_budget_benchmark_runs_both_batchings(tmp_path):
    result = run_script([sys.executable, str(ROOT / "bench" / "token_budget.py"), "--runs", "fixed_batch",
                         "tokens_mean", "--seconds", "1", "--probe_steps", "2", "--train_per_class", "4",
                         "--eval_per_class", "1", "--eval_frames", "2", "--eval_resolutions", "56",
                         "--data_root", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")], tmp_path)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) == {"fixed_batch", "tokens_mean"}
    assert summary["fixed_batch"]["clips_per_step"] == 8 and summary["tokens_mean"]["clips_per_step"] >= 8
    # the step count follows measured time, so which scales were drawn varies; the batch rule must hold at each
    for name, clips_for_frames in (("fixed_batch", {4: 8, 8: 8}), ("tokens_mean", {4: 16, 8: 8})):
        steps = re.findall(r"'frames': (\d+), 'resolution': \d+, 'patch_size': \d+, 'clips': (\d+)",
                           (tmp_path / "out" / name / "train.log").read_text())
        assert steps and all(clips_for_frames[int(f)] == int(c) for f, c in steps), (name, steps)
    assert "clips/s" in result.stdout.splitlines()[-3]


def test_scaling_benchmark_saved_activations_and_training_rows(tmp_path):
    """The saved-activation rows (fused mixer, unfused mixer, VideoMAE) and the training-step rows with --unfused."""
    rows_file = tmp_path / "rows.json"
    result = run_script([sys.executable, str(ROOT / "bench" / "scaling.py"), "--modes", "saved", "train", "--unfused",
                         "--saved_scales", "4x112", "--train_resolutions", "32", "--train_width", "24",
                         "--train_depth", "1", "--train_batch", "2", "--repeats", "1", "--json", str(rows_file)],
                        tmp_path)
    rows = json.loads(rows_file.read_text())
    assert not any("error" in row for row in rows)
    saved = {row["model"]: row["saved_per_token_layer"] for row in rows if row["mode"] == "saved"}
    assert set(saved) == {"stretchysnake", "stretchysnake_unfused", "videomae"}
    assert saved["stretchysnake"] < saved["stretchysnake_unfused"] / 2
    assert {row["model"] for row in rows if row["mode"] == "train"} == set(saved)
    assert "official VideoMamba fused path (analytic" in result.stdout and "peak_mib (training step" in result.stdout


def test_training_step_benchmark_times_all_three_models(tmp_path):
    result = run_script([sys.executable, str(ROOT / "bench" / "training_step.py"), "--scales", "2x32", "--threads", "1",
                         "--repeats", "1", "--width", "24", "--depth", "1", "--batch", "2"], tmp_path)
    row = next(line.split() for line in result.stdout.splitlines() if line.split()[:2] == ["1", "2x32"])
    fused, unfused, videomae = map(float, row[2:5])
    assert min(fused, unfused, videomae) > 0
    printed_ratio = float(re.search(r"stretchysnake (\d+\.\d+),", result.stdout).group(1))
    assert abs(printed_ratio - fused / videomae) < 0.01 + 0.05 * fused / videomae  # the ratio of what it measured
    kernels, share, without = re.search(r"its numba kernels (\d+\.\d) ms a step \((\d+)%\), fused without them "
                                        r"(\d+\.\d+)", result.stdout).groups()
    assert 0 <= float(kernels) < fused and 0 <= int(share) < 100
    assert abs(float(without) - (fused - float(kernels)) / videomae) < 0.01 + 0.05 * fused / videomae


def test_gpu_script_dry_run(tmp_path):
    """bench/gpu.py --dry-run: every section of the GPU check at toy size on CPU, the fused op's Triton path under
    the interpreter, so the one GPU run cannot fail on a typo, an import or a shape."""
    result = run_script([sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run", "--out", str(tmp_path / "gpu")],
                        tmp_path)
    results = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert all(value["ok"] for value in results["sections"].values()), results["sections"]
    assert len(results["sections"]) == 4
    correctness = results["sections"]["1. Correctness against the float64 CPU mixer"]["result"]
    expected_paths = {"unfused, chunked"} | ({"fused, triton"} if triton_available() else set())
    assert {row["path"] for row in correctness} == expected_paths
    markdown = (tmp_path / "gpu" / "results.md").read_text()
    assert "### 4. A short training run" in markdown and "| frames \\ px |" in markdown
    assert "failed sections" not in result.stderr


def test_data_sources_benchmark_times_files_parquet_and_a_stream(tmp_path):
    rates_file = tmp_path / "rates.json"
    result = run_script([sys.executable, str(ROOT / "bench" / "data_sources.py"), "--data_root", str(tmp_path / "data"),
                         "--videos_per_class", "4", "--shards", "4", "--steps", "2", "--rounds", "2", "--workers", "0",
                         "--json", str(rates_file)], tmp_path)
    rates = json.loads(rates_file.read_text())
    assert rates["videos"] == 20 and len(list((tmp_path / "data" / "parquet_shards").glob("*.parquet"))) == 4
    for source in ("files", "parquet", "stream"):
        cell = rates[f"{source}@0"]
        assert len(cell["rounds"]) == 2 and all(rate > 0 for rate in cell["rounds"])
        assert cell["ratio_to_files"] == pytest.approx(cell["clips_per_second"] / rates["files@0"]["clips_per_second"])
    assert result.stdout.splitlines()[-1].startswith("stream")


def test_decoding_benchmark_compares_both_decoders(tmp_path):
    pytest.importorskip("decord")
    rows_file = tmp_path / "rows.json"
    result = run_script([sys.executable, str(ROOT / "bench" / "decoding.py"), "--files_dir", str(tmp_path / "files"),
                         "--files", "phone_vertical", "--seconds_scale", "0.05", "--frames", "4", "--resolution",
                         "32", "--repeats", "1", "--json", str(rows_file)], tmp_path)
    rows = json.loads(rows_file.read_text())
    assert [row["resize"] for row in rows] == ["squash", "shortest"]
    for row in rows:
        assert row["decord_seconds"] > 0 and row["pyav_seconds"] > 0
        assert row["pyav_shape"][0] == 4 and min(row["pyav_shape"][1:3]) == 32
        assert row["decord_shape"] == row["pyav_shape"]  # the same request served, upright, by both
    assert rows[1]["pyav_shape"][1] > rows[1]["pyav_shape"][2]  # the phone clip is shown portrait
    assert "faster" in result.stdout.splitlines()[1]


def test_kernel_floor_benchmark_times_every_kernel_against_the_exp_floor(tmp_path):
    """bench/kernel_floor.py, one round at the main job's block: every numba kernel the mixer calls is timed in the
    phase that calls it, with its exp count and its time over the measured exp floor."""
    output = tmp_path / "floor.json"
    result = run_script([sys.executable, str(ROOT / "bench" / "kernel_floor.py"), "--shapes", "main", "--threads",
                         "1", "--repeats", "1", "--output", str(output)], tmp_path)
    written = json.loads(output.read_text())
    (results,) = written["kernels"]
    kernels = results["shapes"]["main"]["kernels"]
    calls = {name: kernel["calls_per_round"] for name, kernel in kernels.items()}
    assert calls == {"forward: conv_silu_forward": 1, "forward: scan_forward": 2, "backward: conv_silu_forward": 1,
                     "backward: scan_backward": 2, "backward: conv_silu_backward": 1}
    steps = 8 * 192 * 130  # batch x d_inner x tokens
    assert kernels["forward: scan_forward"]["exps"] == 2 * steps * (16 + 3)
    assert results["exp_per_second"] > 0
    # timings are compared by the benchmark's tables, not here (a busy machine reorders them); a ratio is what was
    # measured: the kernel's time over its exps' floor at the rate measured in the same run
    for kernel in kernels.values():
        assert kernel["ms"] > 0 and kernel["floor_ms"] > 0
        assert abs(kernel["ratio"] - kernel["ms"] / kernel["floor_ms"]) < 1e-9 * kernel["ratio"]
        assert abs(kernel["floor_ms"] - 1e3 * kernel["exps"] / results["exp_per_second"]) < 1e-9 * kernel["floor_ms"]
        assert abs(kernel["memory_ratio"] - kernel["ms"] / kernel["memory_floor_ms"]) < 1e-9 * kernel["memory_ratio"]
    # the bytes a call moves at least: the scan forward reads u, delta, z (batch x d_inner x L each) and writes y
    assert kernels["forward: scan_forward"]["bytes"] > 2 * 4 * 4 * steps
    assert "ms / floor" in result.stdout and "FLOP / byte" in result.stdout
    loops = written["inner_loops_ns_per_state_step"]["main"]
    assert set(loops) == {"forward steps", "backward chunk", "backward walk back"}
    assert all(0 < value < float("inf") for value in loops.values())
    assert "loop share" in result.stdout
    # each scan's passes: the kernel, the kernel with every bit of its parts mask, and what each pass adds
    passes = written["scan_passes_ms"]["main"]
    assert set(passes) == {"scan_forward", "scan_backward"}
    assert len(passes["scan_forward"]) == 2 + 5 and len(passes["scan_backward"]) == 2 + 6
    assert all(rows["the kernel"] > 0 and rows["all passes (the parts mask)"] > 0 for rows in passes.values())
    assert "what it adds to those before it" in result.stdout


def test_step_profile_times_the_parts_of_the_training_step(tmp_path):
    """bench/step_profile.py, two steps of the recipe on a few rendered clips: the parts of a step, in ms per step,
    the mixer ops and kernels counted inside the forward and backward that call them."""
    result = run_script([sys.executable, str(ROOT / "bench" / "step_profile.py"), "--steps", "2", "--output_dir",
                         str(tmp_path / "run"), "--", "--generated_train_per_class", "2", "--generated_eval_per_class",
                         "1", "--eval_frames", "2", "--eval_resolutions", "56", "--data_root", str(tmp_path / "data")],
                        tmp_path)
    table = result.stdout[result.stdout.index("ms per training step, 2 steps:"):]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in table.splitlines()[3:]}
    ms = {name: float(cells[0]) for name, cells in rows.items()}
    assert rows["forward and loss (compute_loss)"][1].strip(" |") == "2"  # called once a step
    assert ms["of the forward: the mixer ops (all blocks)"] < ms["forward and loss (compute_loss)"]
    assert ms["of the backward: the mixer ops (all blocks)"] < ms["backward (accelerator.backward)"]
    whole = ms["Trainer.train, whole (the first steps' warm-up included)"]
    assert ms["forward and loss (compute_loss)"] + ms["backward (accelerator.backward)"] < whole


def test_cascade_benchmark_writes_its_comparison(tmp_path):
    """bench/cascade.py on a small untrained model: single scales, the fitted cascade (run for real and replayed),
    the budget comparison and the fixed model's reference, in JSON, markdown and a plot."""
    import torch

    from conftest import small_config
    from modeling_stretchysnake import StretchySnakeForVideoClassification
    from modeling_stretchysnake.training.synthetic_actions import ACTIONS, generate_action_dataset

    generate_action_dataset(tmp_path / "data", {"test": 1}, num_frames=6, size=32)
    torch.manual_seed(0)
    StretchySnakeForVideoClassification(small_config(num_labels=5, id2label=dict(enumerate(ACTIONS)))).save_pretrained(
        tmp_path / "model")
    run_script([sys.executable, str(ROOT / "bench" / "cascade.py"), "--model", str(tmp_path / "model"),
                "--fixed_model", str(tmp_path / "model"), "--fixed_scale", "2x16",
                "--manifest", str(tmp_path / "data" / "manifest"), "--validation_per_class", "1",
                "--frames", "2", "4", "--resolutions", "16", "32", "--output", str(tmp_path / "out")], tmp_path)
    (results,) = json.loads((tmp_path / "out" / "cascade.json").read_text())
    assert [row["scale"] for row in results["single_scales"]] == ["2x16", "2x32", "4x16", "4x32"]
    assert results["run_clips_differing"] == 0 and results["run_max_logit_difference"] < 1e-4
    assert results["validation_videos"] == 5 and results["test_videos"] == 5
    assert len(results["budgets"]) == 4 and results["fixed_model"]["scale"] == "2x16"
    assert (tmp_path / "out" / "cascade.png").stat().st_size > 0
    assert "Cascade" in (tmp_path / "out" / "cascade.md").read_text()
