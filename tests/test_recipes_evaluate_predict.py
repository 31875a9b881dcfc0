import json
import shutil
import sys

import pytest
import torch

from conftest import ROOT, small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.training.probes import linear_probe_accuracy, nearest_neighbour_accuracy
from modeling_stretchysnake.training.synthetic_actions import ACTIONS, generate_action_dataset

sys.path.insert(0, str(ROOT / "recipes"))
import evaluate_model as evaluate_recipe  # noqa: E402
import predict as predict_recipe  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    generate_action_dataset(root / "data", {"train": 2, "test": 1}, num_frames=6, size=32)
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(num_labels=5, id2label=dict(enumerate(ACTIONS))))
    model.save_pretrained(root / "model")
    StretchySnakeVideoProcessor(num_frames=3, resolution=16).save_pretrained(root / "model")
    return root


def test_evaluate_recipe_grid_probes_and_files(saved, capsys):
    out = saved / "out"
    results = evaluate_recipe.main(["--model", str(saved / "model"), "--manifest", str(saved / "data" / "manifest"),
                                    "--frames", "2", "4", "--resolutions", "16", "32", "--clips", "2", "--crops", "2",
                                    "--probes", "--output_dir", str(out), "--batch_size", "4"])
    assert len(results) == 4
    for values in results.values():
        assert {"top1", "top5", "mean_class_acc", "knn_top1", "linear_probe_top1"} <= set(values)
    printed = capsys.readouterr().out
    assert "knn_top1" in printed and "linear_probe_top1" in printed and "2 clip(s) x 2 crop(s)" in printed
    rows = json.loads((out / "scale_grid.json").read_text())
    assert {(r["frames"], r["resolution"], r["patch_size"]) for r in rows} == {(2, 16, 4), (2, 32, 8), (4, 16, 4), (4, 32, 8)}


def test_predict_recipe_direct_and_through_pipeline(saved):
    video = next((saved / "data" / "test" / "move_left").glob("*.mp4"))
    direct = predict_recipe.main(["--model", str(saved / "model"), "--video", str(video), "--frames", "3",
                                  "--resolution", "16", "--top_k", "3"])
    piped = predict_recipe.main(["--model", str(saved / "model"), "--video", str(video), "--frames", "3",
                                 "--resolution", "16", "--top_k", "3", "--pipeline"])
    assert [label for label, _ in direct] == [label for label, _ in piped]
    assert all(label in ACTIONS for label, _ in direct)
    for (_, a), (_, b) in zip(direct, piped):
        assert a == pytest.approx(b, abs=1e-5)


def test_predict_recipe_averages_the_evaluation_views(saved, tmp_path, capsys):
    from modeling_stretchysnake.training.synthetic_actions import write_video

    noise = torch.randint(0, 256, (12, 32, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    video = write_video(tmp_path / "wide.mp4", noise.numpy())  # wide and changing: every view differs
    model = StretchySnakeForVideoClassification.from_pretrained(saved / "model").eval()
    processor = StretchySnakeVideoProcessor.from_pretrained(saved / "model")
    with torch.no_grad():
        views = [model(processor(str(video), scale=(3, 16), clip=clip, num_clips=2, crop=crop,
                                 num_crops=3)["pixel_values"]).logits.softmax(-1)[0]
                 for clip in range(2) for crop in range(3)]
    assert not torch.allclose(views[0], views[-1])  # the views differ
    expected = torch.stack(views).mean(0)
    results = predict_recipe.main(["--model", str(saved / "model"), "--video", str(video), "--frames", "3",
                                   "--resolution", "16", "--top_k", "5", "--clips", "2", "--crops", "3"])
    assert "2 clips x 3 crops" in capsys.readouterr().out
    for label, score in results:
        assert score == pytest.approx(float(expected[model.config.label2id[label]]), abs=1e-6)


def test_probes_on_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=generator) * 5
    train_labels, test_labels = torch.arange(3).repeat(10), torch.arange(3).repeat(4)
    train = centres[train_labels] + torch.randn(30, 8, generator=generator)
    test = centres[test_labels] + torch.randn(12, 8, generator=generator)
    assert nearest_neighbour_accuracy(train, train_labels, test, test_labels) == 100.0
    assert linear_probe_accuracy(train, train_labels, test, test_labels, 3) == 100.0
    shuffled = test_labels[torch.randperm(12, generator=generator)]
    assert nearest_neighbour_accuracy(train, train_labels, test, shuffled) < 100.0


def test_pipeline_with_trust_remote_code_uses_the_saved_processor(saved):
    from transformers import pipeline

    video = next((saved / "data" / "test" / "move_up").glob("*.mp4"))
    classify = pipeline("video-classification", model=str(saved / "model"), trust_remote_code=True)
    assert type(classify.video_processor).__name__ == "StretchySnakeVideoProcessor"
    piped = classify(str(video), top_k=2)
    direct = predict_recipe.main(["--model", str(saved / "model"), "--video", str(video), "--frames",
                                  str(classify.model.config.num_frames), "--resolution", "16", "--top_k", "2"])
    assert [r["label"] for r in piped] == [label for label, _ in direct]
    assert piped[0]["score"] == pytest.approx(direct[0][1], abs=1e-5)


def test_compute_budget_picks_the_most_accurate_scale_that_fits(saved, tmp_path, monkeypatch, capsys):
    """evaluate_model.py records the grid in the model folder and plots accuracy against cost; predict.py --budget_ms
    then runs at the most accurate recorded scale whose forward time, measured here on first use, fits."""
    from modeling_stretchysnake.training import compute_budget
    from modeling_stretchysnake.training.scales import Scale

    monkeypatch.setenv("STRETCHYSNAKE_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "model"
    shutil.copytree(saved / "model", model_dir)
    evaluate_recipe.main(["--model", str(model_dir), "--manifest", str(saved / "data" / "manifest"), "--frames", "2",
                          "4", "--resolutions", "16", "32"])
    # by default the results go beside the model folder, not into the current directory
    assert (tmp_path / "model-evaluation" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "Pareto front marked *" in capsys.readouterr().out
    recorded = compute_budget.load_scale_accuracy(model_dir)
    assert set(recorded) == {Scale(2, 16, 4), Scale(2, 32, 8), Scale(4, 16, 4), Scale(4, 32, 8)}
    assert list((tmp_path / "cache" / "costs").glob("*.json"))  # the cost table is cached

    # a known accuracy table: the biggest scale is the best, the smallest the worst
    accuracy = {Scale(2, 16, 4): 50.0, Scale(4, 16, 4): 70.0, Scale(2, 32, 8): 80.0, Scale(4, 32, 8): 90.0}
    compute_budget.save_scale_accuracy({s: {"top1": v} for s, v in accuracy.items()}, model_dir)
    model = StretchySnakeForVideoClassification.from_pretrained(model_dir).eval()
    _, table = compute_budget.pick_scale(model, model_dir, budget_ms=1e9)
    costs = {row.scale: row.milliseconds for row in table}
    assert compute_budget.pick_scale(model, model_dir, budget_ms=1e9)[0].scale == Scale(4, 32, 8)
    tight = compute_budget.pick_scale(model, model_dir, budget_ms=min(costs.values()) * 0.5)[0]
    assert tight.scale == min(costs, key=costs.get)  # nothing fits: the cheapest
    by_flops = {row.scale: row.gflops for row in compute_budget.pick_scale(model, accuracy, budget_gflops=1e9)[1]}
    assert by_flops[Scale(4, 32, 8)] > by_flops[Scale(2, 16, 4)] > 0
    middle = sorted(by_flops.values())[1] * 1.01  # the two cheapest fit: the more accurate of them is picked
    fits = [s for s, g in by_flops.items() if g <= middle]
    assert compute_budget.pick_scale(model, accuracy, budget_gflops=middle)[0].scale == max(fits, key=accuracy.get)
    front = compute_budget.pareto_front(compute_budget.cost_table(model, accuracy, "gflops"), "gflops")
    assert [row.top1 for row in front] == sorted(row.top1 for row in front)

    video = next((saved / "data" / "test" / "move_left").glob("*.mp4"))
    results = predict_recipe.main(["--model", str(model_dir), "--video", str(video), "--budget_gflops", "1e9",
                                   "--top_k", "2"])
    printed = capsys.readouterr().out
    assert "running at 4 frames x 32 px" in printed and "at 4 frames x 32 px:" in printed and len(results) == 2
    with pytest.raises(SystemExit):
        predict_recipe.main(["--model", str(model_dir), "--video", str(video), "--budget_ms", "5", "--frames", "2"])


def test_cached_costs_that_contradict_token_counts_are_measured_again(tmp_path, monkeypatch):
    """A forward time cached while the machine was busy (fewer tokens, much slower) is re-measured, a consistent
    cache is used as it is, and remeasure=True times everything afresh."""
    from modeling_stretchysnake.training import compute_budget
    from modeling_stretchysnake.training.scales import Scale

    monkeypatch.setenv("STRETCHYSNAKE_CACHE", str(tmp_path / "cache"))
    model = StretchySnakeForVideoClassification(small_config()).eval()
    scales = [Scale(2, 16, 4), Scale(4, 16, 4), Scale(4, 32, 8)]
    measured = compute_budget.measure_milliseconds(model, scales, repeats=2)
    cache = compute_budget._cost_cache_file(model, torch.device("cpu"))
    stored = json.loads(cache.read_text())
    assert set(stored) == {"2x16x4", "4x16x4", "4x32x8"} and measured[Scale(2, 16, 4)] == stored["2x16x4"]
    consistent = {"2x16x4": 1.0, "4x16x4": 2.0, "4x32x8": 3.0}  # made up, but in token order: kept as they are
    cache.write_text(json.dumps(consistent))
    assert compute_budget.measure_milliseconds(model, scales, repeats=2) == {
        Scale(2, 16, 4): 1.0, Scale(4, 16, 4): 2.0, Scale(4, 32, 8): 3.0}
    busy = {**consistent, "2x16x4": 36.3}  # 2 frames timed 12x slower than 4 frames of the same frame size
    cache.write_text(json.dumps(busy))
    assert compute_budget.inconsistent_scales({Scale(*map(int, k.split("x"))): v for k, v in busy.items()}) == {
        Scale(2, 16, 4)}
    again = compute_budget.measure_milliseconds(model, scales, repeats=2)
    assert again[Scale(2, 16, 4)] != 36.3 and again[Scale(4, 16, 4)] != 2.0  # measured again with what it contradicts
    assert json.loads(cache.read_text())["2x16x4"] == again[Scale(2, 16, 4)]
    cache.write_text(json.dumps(consistent))
    fresh = compute_budget.measure_milliseconds(model, scales, repeats=2, remeasure=True)
    assert all(fresh[scale] != consistent[f"{scale.frames}x{scale.resolution}x{scale.patch_size}"] for scale in scales)


@pytest.mark.parametrize("script,arguments,message", [
    ("predict.py", ["--model", "no/such_folder", "--video", "clip.mp4"], "no/such_folder"),
    ("train.py", ["--manifest", "no_such_manifest", "--max_steps", "1"], "no_such_manifest"),
    ("evaluate_model.py", ["--model", "{model}", "--manifest", "no_such_manifest"], "no_such_manifest"),
], ids=["predict-missing-model", "train-missing-manifest", "evaluate-missing-manifest"])
def test_recipes_report_bad_input_in_one_line(saved, tmp_path, script, arguments, message):
    """Bad input is one `error:` line naming it and exit status 1; --debug gives the traceback."""
    import subprocess

    command = [sys.executable, str(ROOT / "recipes" / script),
               *[argument.format(model=saved / "model") for argument in arguments]]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    debug = subprocess.run(command + ["--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
