"""The confidence cascade over scales: its stopping rule, batching, calibration, the saved rule in the pipeline,
and decoding each video once."""

import pytest
import torch

from conftest import small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.cascade import (
    NEVER,
    ScaleCascade,
    cascade_summary,
    confidence_of,
    derive_scale,
    fit_cascade,
    frame_subset,
    replay_cascade,
    run_cascade,
)

SCALES = [(2, 16), (4, 24), (4, 32)]


def logits_with_confidence(probabilities):
    """Logits (clips, 2) whose softmax puts `p` on class 0."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return torch.stack([torch.log(p), torch.log1p(-p)], -1)


def test_confidence_kinds():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    torch.testing.assert_close(confidence_of(logits, "max_probability"), torch.tensor([0.7, 0.4]))
    torch.testing.assert_close(confidence_of(logits, "margin"), torch.tensor([0.5, 0.05]))


def test_a_clip_stops_at_the_first_stage_whose_confidence_reaches_its_threshold():
    stage_logits = torch.stack([logits_with_confidence([0.95, 0.6, 0.6, 0.55]),
                                logits_with_confidence([0.5, 0.9, 0.7, 0.52]),
                                logits_with_confidence([0.5, 0.5, 0.99, 0.51])])
    last = replay_cascade(stage_logits, ScaleCascade(SCALES, [0.9, 0.85], combine="last", costs=[1, 2, 4]))
    assert last.stage.tolist() == [0, 1, 2, 2]
    assert last.cost.tolist() == [1, 3, 7, 7]  # each clip pays for every stage it ran
    torch.testing.assert_close(last.logits[1], stage_logits[1, 1].float())  # the answering stage's logits
    # "mean" averages the logits so far: clip 1's evidence after two stages is the mean of both stages'
    mean = replay_cascade(stage_logits, ScaleCascade(SCALES, [0.9, 0.7], combine="mean"))
    torch.testing.assert_close(mean.logits[2], stage_logits[:, 2].float().mean(0))
    assert mean.stage[0] == 0 and mean.stage[2] == 2
    never = replay_cascade(stage_logits, ScaleCascade(SCALES, [NEVER, NEVER]))
    assert never.stage.tolist() == [2, 2, 2, 2]


def test_rule_checks_and_round_trip():
    cascade = ScaleCascade(SCALES, [0.8, 0.9], "margin", "last", [1.0, 2.0, 3.0], fitted={"clips": 10})
    assert ScaleCascade.from_dict(cascade.to_dict()) == cascade
    assert cascade.largest_scale == (4, 32)
    with pytest.raises(ValueError, match="needs 2 thresholds"):
        ScaleCascade(SCALES, [0.5])
    with pytest.raises(ValueError, match="confidence must be one of"):
        ScaleCascade(SCALES, [0.5, 0.5], confidence="entropy")
    with pytest.raises(ValueError, match="calibrate_cascade.py"):
        ScaleCascade.from_dict(None)


def test_derived_scales_take_a_frame_subset_and_resize():
    assert frame_subset(16, 8).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert frame_subset(8, 8).tolist() == list(range(8))
    frames = torch.arange(8.0).view(1, 8, 1, 1, 1).expand(2, 8, 3, 32, 32)  # every frame holds its index
    small = derive_scale(frames, 4, 16)
    assert small.shape == (2, 4, 3, 16, 16)
    assert small[0, :, 0, 0, 0].tolist() == [0.0, 2.0, 5.0, 7.0]
    with pytest.raises(ValueError, match="cannot take 16 frames"):
        derive_scale(frames, 16, 16)


def test_batched_cascade_answers_as_one_by_one_and_as_its_replay():
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config()).eval()
    pixels = torch.randn(8, 4, 3, 32, 32)
    with torch.inference_mode():
        stage_logits = torch.stack([model(derive_scale(pixels, f, r)).logits for f, r in SCALES])
    # thresholds at the median confidence of the clips reaching each stage, so that clips stop at every stage
    first = confidence_of(stage_logits[0], "max_probability")
    going_on = first < first.median()
    second = confidence_of(stage_logits[:2, going_on].mean(0), "max_probability")
    cascade = ScaleCascade(SCALES, [first.median().item(), second.median().item()], combine="mean",
                           costs=[1.0, 2.0, 4.0])
    batched = run_cascade(model, pixels, cascade)
    assert set(batched.stage.tolist()) == {0, 1, 2}
    one_by_one = [run_cascade(model, pixels[i:i + 1], cascade) for i in range(8)]
    assert batched.stage.tolist() == [r.stage.item() for r in one_by_one]
    torch.testing.assert_close(batched.logits, torch.cat([r.logits for r in one_by_one]), atol=1e-5, rtol=1e-5)
    replayed = replay_cascade(stage_logits, cascade)
    assert replayed.stage.tolist() == batched.stage.tolist()
    torch.testing.assert_close(replayed.logits, batched.logits, atol=1e-5, rtol=1e-5)


def test_calibration_reaches_the_best_single_scale_for_less():
    """Stage 0 is right exactly on its confident clips, the last stage on all: the fitted cascade keeps the last
    stage's top-1 and sends only the unsure clips on."""
    generator = torch.Generator().manual_seed(0)
    clips, labels = 200, torch.zeros(200, dtype=torch.long)
    sure = torch.rand(clips, generator=generator) < 0.7
    first = logits_with_confidence(torch.where(sure, 0.9 + 0.09 * torch.rand(clips, generator=generator),
                                               0.3 + 0.15 * torch.rand(clips, generator=generator)).tolist())
    middle = logits_with_confidence((0.3 + 0.15 * torch.rand(clips, generator=generator)).tolist())  # never right
    last = logits_with_confidence((0.6 + 0.3 * torch.rand(clips, generator=generator)).tolist())
    stage_logits = torch.stack([first, middle, last])
    every_stage = fit_cascade(stage_logits, labels, SCALES, costs=[1.0, 3.0, 10.0], combine="last",
                              choose_stages=False)
    summary = cascade_summary(replay_cascade(stage_logits, every_stage), labels, every_stage)
    assert summary["top1"] == 100.0 == every_stage.fitted["top1"]
    assert summary["answered_at"]["2x16"] == pytest.approx(100.0 * sure.double().mean().item())
    assert summary["mean_cost"] < 0.5 * 14.0  # running every stage costs 14, the last alone 10
    assert summary["answered_at"]["4x24"] == 0.0  # the middle stage, never right, never decides
    # choosing its stages, the cascade skips the middle one: it decides nothing and costs the unsure clips 3 more
    cascade = fit_cascade(stage_logits, labels, SCALES, costs=[1.0, 3.0, 10.0], combine="last")
    assert cascade.scales == [SCALES[0], SCALES[2]] and cascade.rows_in(SCALES) == [0, 2]
    chosen = cascade_summary(replay_cascade(stage_logits[cascade.rows_in(SCALES)], cascade), labels, cascade)
    assert chosen["top1"] == 100.0
    assert chosen["mean_cost"] == pytest.approx(summary["mean_cost"] - 3.0 * (1 - sure.double().mean().item()))
    # with a budget: the most accurate rule whose mean cost fits it
    budget = fit_cascade(stage_logits, labels, SCALES, costs=[1.0, 3.0, 10.0], budget=2.0, combine="last")
    assert budget.fitted["mean_cost"] <= 2.0 and budget.fitted["top1"] >= 100.0 * sure.double().mean().item()


def test_the_pipeline_uses_the_saved_rule_and_decodes_each_video_once(tmp_path, monkeypatch):
    from transformers import pipeline

    from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

    data = generate_action_dataset(tmp_path / "data", {"test": 1}, num_frames=8, size=32)
    videos = sorted(str(p) for p in (tmp_path / "data" / "test").rglob("*.mp4"))[:3]
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config()).eval()
    cascade = ScaleCascade(SCALES, [0.0, 0.0], costs=[1.0, 2.0, 4.0])  # everything stops at the first stage
    model.config.cascade = cascade.to_dict()
    model.save_pretrained(tmp_path / "model")
    StretchySnakeVideoProcessor(num_frames=4, resolution=32).save_pretrained(tmp_path / "model")
    classify = pipeline("video-classification", model=str(tmp_path / "model"), trust_remote_code=True)
    processor_class = type(classify.video_processor)
    decoded = []
    original = processor_class._load

    def counting_load(self, video, frames, size, *args):
        decoded.append((video, frames, size))
        return original(self, video, frames, size, *args)

    monkeypatch.setattr(processor_class, "_load", counting_load)
    results = classify(videos, cascade=True, top_k=2, batch_size=2)
    assert decoded == [(video, 4, 32) for video in videos]  # once each, at the largest scale
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    for video, result in zip(videos, results):
        assert {r["scale"] for r in result} == {"2x16"} and {r["cost"] for r in result} == {1.0}
        with torch.inference_mode():
            expected = model(derive_scale(processor(video, scale=(4, 32))["pixel_values"], 2, 16)).logits
        assert result[0]["label"] == model.config.id2label[int(expected.argmax())]
        assert result[0]["score"] == pytest.approx(expected.softmax(-1).max().item(), abs=1e-5)
    assert "scale" not in classify(videos[0], top_k=1)[0]  # without cascade=True: the plain pipeline


def test_recipes_calibrate_then_predict_and_evaluate_with_the_cascade(tmp_path, capsys):
    import json
    import sys

    from conftest import ROOT
    from modeling_stretchysnake.training.synthetic_actions import ACTIONS, generate_action_dataset

    sys.path.insert(0, str(ROOT / "recipes"))
    import calibrate_cascade
    import evaluate_model
    import predict

    generate_action_dataset(tmp_path / "data", {"validation": 2, "test": 1}, num_frames=6, size=32)
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(num_labels=5, id2label=dict(enumerate(ACTIONS))))
    model.save_pretrained(tmp_path / "model")
    StretchySnakeVideoProcessor(num_frames=4, resolution=32).save_pretrained(tmp_path / "model")
    manifest = str(tmp_path / "data" / "manifest")
    rule = calibrate_cascade.main(["--model", str(tmp_path / "model"), "--manifest", manifest, "--frames", "2", "4",
                                   "--resolutions", "16", "32", "--batch_size", "4"])
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["cascade"]
    assert saved == rule and saved["fitted"]["clips"] == 10 and saved["cost_unit"] == "gflops"
    assert saved["fitted"]["top1"] >= max(saved["fitted"]["single_scale_top1"].values()) - 1e-9
    assert "saved in" in capsys.readouterr().out

    video = str(next((tmp_path / "data" / "test" / "move_left").glob("*.mp4")))
    direct = predict.main(["--model", str(tmp_path / "model"), "--video", video, "--cascade", "--top_k", "2"])
    through_pipeline = predict.main(["--model", str(tmp_path / "model"), "--video", video, "--cascade", "--top_k",
                                     "2", "--pipeline"])
    assert [label for label, _ in direct] == [label for label, _ in through_pipeline]
    assert [s for _, s in direct] == pytest.approx([s for _, s in through_pipeline], abs=1e-5)
    assert "answered at" in capsys.readouterr().out

    summary = evaluate_model.main(["--model", str(tmp_path / "model"), "--manifest", manifest, "--cascade",
                                   "--output_dir", str(tmp_path / "eval"), "--batch_size", "4"])
    assert summary["videos"] == 5 and sum(summary["answered_at"].values()) == pytest.approx(100.0)
    assert json.loads((tmp_path / "eval" / "cascade.json").read_text())["top1"] == summary["top1"]
    with pytest.raises(SystemExit):  # a scale and --cascade contradict each other
        predict.main(["--model", str(tmp_path / "model"), "--video", video, "--cascade", "--frames", "2"])


def test_the_fine_texture_task_needs_resolution_in_its_textured_clips():
    """bench/cascade.py's task where scale matters: a textured square averages away at 56 px and shows at 168 px;
    a plain one shows at both. Tasks without textures render the same clips as before the option existed."""
    import numpy as np
    import torch.nn.functional as F

    from modeling_stretchysnake.training.synthetic_actions import TASKS, render_action

    options = dict(TASKS["fine_texture"])
    size = options.pop("size")

    def contrast(clip, resolution):
        frame = torch.from_numpy(clip[0]).permute(2, 0, 1)[None].float()
        return F.interpolate(frame, size=(resolution, resolution), mode="bilinear", antialias=True).std().item()

    textured = render_action("move_left", 4, size, np.random.default_rng(0), **{**options, "textured_share": 1.0})
    plain = render_action("move_left", 4, size, np.random.default_rng(0), **{**options, "textured_share": 0.0})
    assert contrast(textured, 56) < 1.0 < 5.0 < contrast(textured, 168)
    assert min(contrast(plain, 56), contrast(plain, 168)) > 20.0
    # the main job's clips are still the ones its published numbers came from (this sum, before the option existed)
    assert render_action("move_left", 24, 96, np.random.default_rng(0), **TASKS["clear"]).sum() == 20925567


def test_the_brief_motion_task_hides_some_motions_between_sparse_frames():
    """bench/cascade.py's task where the number of frames matters: an excursion clip starts and ends in the same
    place and moves only within EXCURSION_FRAMES consecutive frames, so 4 frames spread over 24 can miss it."""
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import EXCURSION_FRAMES, TASKS, render_action

    options = {**TASKS["brief_motion"], "noise": 0, "excursion_share": 1.0}
    missed = 0
    for seed in range(20):
        clip = render_action("move_right", 24, 96, np.random.default_rng(seed), **options)
        colours, counts = np.unique(clip[0].reshape(-1, 3), axis=0, return_counts=True)
        background = colours[counts.argmax()]
        columns = [np.flatnonzero((frame != background).any(-1).any(0)).min() for frame in clip]  # left edge
        moving = [t for t in range(24) if columns[t] != columns[0]]
        assert columns[0] == columns[-1] and 0 < len(moving) <= EXCURSION_FRAMES
        assert max(columns) - columns[0] >= 96 // 2 - 96 // 3  # the excursion travels as far as a crossing
        missed += not set(moving) & set(np.linspace(0, 23, 4).round().astype(int).tolist())
    assert missed >= 5  # 4 frames over 24 miss many excursions


def test_calibration_short_of_its_target_or_budget_comes_as_close_as_it_can():
    stage_logits = torch.stack([logits_with_confidence([0.9, 0.4, 0.4, 0.6]),  # right on clips 0 and 3
                                logits_with_confidence([0.9, 0.6, 0.4, 0.6])])  # right on clips 0, 1 and 3
    labels = torch.zeros(4, dtype=torch.long)
    scales = SCALES[:2]
    unreachable = fit_cascade(stage_logits, labels, scales, [1.0, 2.0], target_top1=100.0, combine="last")
    assert unreachable.fitted["top1"] == 75.0  # the most accurate rule there is
    too_small = fit_cascade(stage_logits, labels, scales, [1.0, 2.0], budget=0.5, combine="last")
    assert too_small.fitted["mean_cost"] == 1.0  # the cheapest rule there is


def test_the_glimpses_task_shows_some_clips_only_in_frames_sparse_sampling_skips():
    """bench/cascade.py's task where the number of frames matters: a glimpse clip shows its square in two consecutive
    frames only, crossing its path between them; uniform sampling of 16 frames sees both, of 8, 4 or 2 at most one."""
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import TASKS, render_action
    from modeling_stretchysnake.video_decoding import sample_frame_indices

    options = {**TASKS["glimpses"], "noise": 0, "glimpse_share": 1.0}
    frames = options.pop("num_frames")
    for seed in range(12):
        clip = render_action("move_right", frames, 96, np.random.default_rng(seed), **options)
        background = clip[0, 0, 0]
        shown = [t for t in range(frames) if (clip[t] != background).any()]
        assert len(shown) == 2 and shown[1] == shown[0] + 1 and 0 < shown[0] and shown[1] < frames - 1
        left_edges = [np.flatnonzero((clip[t] != background).any(-1).any(0)).min() for t in shown]
        assert left_edges[1] - left_edges[0] >= 96 // 2 - 96 // 3  # a whole crossing between the two frames
        sampled = {count: set(sample_frame_indices(frames, count).tolist()) & set(shown) for count in (2, 4, 8, 16)}
        assert len(sampled[16]) == 2 and all(len(sampled[count]) <= 1 for count in (2, 4, 8))
    plain = render_action("move_right", frames, 96, np.random.default_rng(0), **{**options, "glimpse_share": 0.0})
    assert all(len(np.unique(frame.reshape(-1, 3), axis=0)) == 2 for frame in plain)  # the square in every frame


def test_calibration_keeps_the_better_way_to_combine_the_evidence():
    """A cheap stage unsure of three clips, and on one of them (clip 4) nearly sure of a wrong class among the rest:
    the running mean of the logits keeps that vote and misses the clip at any threshold, the last stage's logits
    alone get it; "best" fits both and keeps "last"."""
    cheap = torch.tensor([[0.95, 0.025, 0.025]] * 2 + [[0.3, 0.4, 0.3]] * 2 + [[0.05, 0.48, 0.47]]).log()
    full = torch.tensor([[0.9, 0.05, 0.05]] * 2 + [[0.6, 0.2, 0.2]] * 2 + [[0.5, 0.3, 0.2]]).log()
    stage_logits, labels = torch.stack([cheap, full]), torch.zeros(5, dtype=torch.long)
    mean = fit_cascade(stage_logits, labels, SCALES[:2], [1.0, 4.0], combine="mean", choose_stages=False)
    assert mean.fitted["top1"] == 80.0
    best = fit_cascade(stage_logits, labels, SCALES[:2], [1.0, 4.0], choose_stages=False)
    assert best.combine == "last" and best.fitted["top1"] == 100.0
    assert best.fitted["mean_cost"] == pytest.approx(1.0 + 4.0 * 3 / 5)
    with pytest.raises(ValueError, match="combine"):
        fit_cascade(stage_logits, labels, SCALES[:2], [1.0, 4.0], combine="vote")


def test_stage_choice_stays_small_on_a_long_front():
    """Eight scales: the fit tries the whole list and the subsets of at most max_stages scales, not all 255."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (60,), generator=generator)
    stage_logits = torch.randn(8, 60, 3, generator=generator)
    stage_logits[:, torch.arange(60), labels] += torch.linspace(0.0, 3.0, 8)[:, None]  # later scales more often right
    scales = [(frames, 56) for frames in range(1, 9)]
    cascade = fit_cascade(stage_logits, labels, scales, [float(f) for f, _ in scales], max_stages=2)
    assert len(cascade.scales) <= 2 or cascade.scales == scales
    assert cascade.fitted["top1"] >= max(cascade.fitted["single_scale_top1"].values()) - 1e-9
