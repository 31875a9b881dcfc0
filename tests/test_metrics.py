"""The `video_accuracy` evaluate module: loaded with `evaluate.load(<local path>)`, combined with other modules, used
by the Trainer's evaluation, and equal to the NumPy metrics it replaced on the main job's model."""

import os
import subprocess
import sys

import evaluate
import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from conftest import ROOT
from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.training.metrics import VIDEO_ACCURACY, load_video_accuracy
from modeling_stretchysnake.training.scales import Scale, ScaleSampler
from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer


def replaced_numpy_metrics(logits, labels, num_labels):
    """The Trainer's metrics before the evaluate module (verbatim), kept here as the oracle."""
    k = min(5, num_labels)
    ranked = np.argsort(-logits, axis=1)
    top1 = ranked[:, 0] == labels
    topk = (ranked[:, :k] == labels[:, None]).any(1)
    per_class = [top1[labels == c].mean() for c in range(num_labels) if (labels == c).any()]
    return {"top1": 100 * top1.mean(), f"top{k}": 100 * topk.mean(), "mean_class_acc": 100 * float(np.mean(per_class))}


def test_loads_from_its_folder_with_evaluate_load():
    metric = evaluate.load(str(VIDEO_ACCURACY))
    scores = [[3, 1, 0], [0, 3, 1], [0, 1, 3], [3, 0, 1]]
    results = metric.compute(predictions=scores, references=[0, 1, 1, 2])
    assert results == pytest.approx({"top1": 50.0, "top3": 100.0, "mean_class_acc": (100 + 50 + 0) / 3,
                                     "num_videos": 4, "num_views": 1})
    with pytest.raises(KeyError, match="config_name"):
        evaluate.load(str(VIDEO_ACCURACY), "per_frame")


def test_multi_view_rows_are_averaged_per_video():
    rng = np.random.default_rng(0)
    views = rng.dirichlet(np.ones(7), size=(6, 4))  # 6 videos x 4 views of 7-class probabilities
    labels = rng.integers(0, 7, size=6)
    order = rng.permutation(24)  # views arrive in any order
    rows, ids = views.reshape(24, 7)[order], np.repeat(np.arange(6), 4)[order]
    multi_view = load_video_accuracy("multi_view").compute(predictions=rows, references=labels[ids], video_ids=ids)
    averaged = load_video_accuracy().compute(predictions=views.mean(1), references=labels)
    assert multi_view == pytest.approx({**averaged, "num_views": 4}) and multi_view["num_videos"] == 6
    mislabelled = labels[ids]
    mislabelled[np.flatnonzero(ids == 0)[0]] = (labels[0] + 1) % 7  # one view of video 0 disagrees
    with pytest.raises(ValueError, match="different references"):
        load_video_accuracy("multi_view").compute(predictions=rows, references=mislabelled, video_ids=ids)


def test_scale_grid_results_and_means():
    metric = load_video_accuracy("scale_grid")
    metric.add_batch(predictions=[[0.9, 0.1], [0.4, 0.6]], references=[0, 0], video_ids=[0, 1], scales=["4x56"] * 2)
    metric.add_batch(predictions=[[0.2, 0.8], [0.6, 0.4]], references=[0, 0], video_ids=[0, 1], scales=["8x56"] * 2)
    results = metric.compute()
    assert results["top1@4x56"] == 50.0 and results["top1@8x56"] == 50.0 and results["num_videos@8x56"] == 2
    assert results["top1_grid_mean"] == 50.0 and results["top2_grid_mean"] == 100.0
    assert results["num_views@4x56"] == 1
    assert "num_videos_grid_mean" not in results and "num_views_grid_mean" not in results


def test_combines_with_other_evaluate_modules(tmp_path):
    other = tmp_path / "mean_confidence"
    other.mkdir()
    (other / "mean_confidence.py").write_text('''
import datasets
import evaluate
import numpy as np

class MeanConfidence(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="", citation="", features=datasets.Features({
            "predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"mean_confidence": float(np.max(predictions, axis=1).mean())}
''')
    combined = evaluate.combine([evaluate.load(str(VIDEO_ACCURACY)), evaluate.load(str(other))])
    results = combined.compute(predictions=[[0.75, 0.25], [0.5, 0.5]], references=[0, 1])
    assert results == pytest.approx({"top1": 50.0, "top2": 100.0, "mean_class_acc": 50.0, "num_videos": 2,
                                     "num_views": 1, "mean_confidence": 0.625})


def test_loads_offline():
    code = ("from modeling_stretchysnake.training.metrics import load_video_accuracy; "
            "print(load_video_accuracy().compute(predictions=[[0.1, 0.9]], references=[1])['top1'])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "100.0", result.stderr[-2000:]


def test_trainer_results_equal_the_replaced_metrics_on_the_main_jobs_model(tmp_path):
    """The main job's model (recipes/train.py's embedded model) evaluated with 2 clips x 2 crops at two scales: the
    Trainer hands every view's probabilities to the module, and its grid equals the replaced NumPy code on the
    views averaged here."""
    sys.path.insert(0, str(ROOT / "recipes"))
    import train

    manifest = generate_action_dataset(tmp_path / "data", {"train": 1, "test": 4}, num_frames=8, size=56)
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(StretchySnakeConfig(**train.EMBEDDED_MODEL, num_labels=5))
    processor = StretchySnakeVideoProcessor(num_frames=8, resolution=56)
    eval_set = VideoClipDataset(manifest["test"], processor, training=False)
    scales = [Scale(4, 56, 14), Scale(8, 84, 21)]
    trainer = StretchySnakeTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8,
                                            report_to="none", use_cpu=True, disable_tqdm=True),
        eval_dataset=eval_set, scale_sampler=ScaleSampler("static_tokens"), eval_scales=scales, eval_views=(2, 2))
    metrics = trainer.evaluate()
    for scale in scales:
        probabilities, labels, video_ids = trainer.predict_scale(eval_set, scale)
        assert video_ids.tolist() == np.repeat(np.arange(20), 4).tolist()  # one row per (video, view)
        per_video = np.stack([probabilities[video_ids == video].mean(0) for video in range(20)])
        expected = replaced_numpy_metrics(np.log(per_video + 1e-12), labels[::4], 5)
        assert trainer.last_scale_results[scale] == pytest.approx({**expected, "num_videos": 20, "num_views": 4})
        for name, value in expected.items():
            assert metrics[f"eval_{name}@{scale.frames}x{scale.resolution}"] == pytest.approx(value)
    assert metrics["eval_top1_grid_mean"] == pytest.approx(
        np.mean([trainer.last_scale_results[s]["top1"] for s in scales]))
    assert len({trainer.last_scale_results[s]["top1"] for s in scales} | {0.0, 100.0}) > 2  # not a degenerate grid


def test_no_recipe_shadows_the_evaluate_library():
    """A script runs with its own folder first on sys.path: recipes/evaluate.py once hid the library from train.py."""
    for folder in ("recipes", "data_scripts", "bench"):
        code = "import evaluate; assert hasattr(evaluate, 'load'), evaluate.__file__"
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT / folder, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT / folder)}, timeout=120)
        assert result.returncode == 0, (folder, result.stderr[-1000:])
