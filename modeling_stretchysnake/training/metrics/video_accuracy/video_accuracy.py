"""Video action-recognition accuracy as a Hugging Face `evaluate` module: top-1, top-5 and mean class accuracy, with
multi-view averaging and results per scale (frames x resolution).

Self-contained (numpy, datasets, evaluate): `evaluate.load` copies this file into its module cache and imports it.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy of video classifiers as action-recognition papers report it: top-1, top-5 (top-k for fewer than 5 classes)
and mean class accuracy (top-1 averaged over the classes present in the references), in percent. Predictions are
per-class scores, usually softmax probabilities. Several views of one video (temporal clips x spatial crops) are
averaged before ranking when `video_ids` are given, and a frames x resolution grid is scored in one call with
`scales`.

Configurations:
- "default": predictions, references (one row per video).
- "multi_view": predictions, references, video_ids (rows with the same id are views of one video).
- "scale_grid": predictions, references, video_ids, scales (a label per row, e.g. "8x224"): each result per scale
  as `top1@8x224`, plus the mean over the scales as `top1_grid_mean`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per-class scores of each row, shape (rows, classes).
    references (`list` of `int`): the true class of each row.
    video_ids (`list` of `int`, configs "multi_view" and "scale_grid"): the video each row is a view of; its views'
        scores are averaged (within a scale) before ranking, and all must carry the same reference.
    scales (`list` of `str`, config "scale_grid"): the scale each row was evaluated at.
Returns:
    top1, top5 (or topK with K = classes when there are fewer than 5), mean_class_acc: percentages, per scale
    (`<name>@<scale>`) and as `<name>_grid_mean` with config "scale_grid"; num_videos and num_views (rows averaged
    per video) per scale with "scale_grid".
Examples:
    >>> metric = evaluate.load("path/to/video_accuracy", "multi_view")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], references=[0, 0, 1], video_ids=[0, 0, 1])
    {'top1': 100.0, 'top2': 100.0, 'mean_class_acc': 100.0, 'num_videos': 2, 'num_views': 1.5}
"""

_CITATION = """
@article{stretchysnake2025,
  title={StretchySnake: Flexible SSM Training Unlocks Action Recognition Across Spatio-Temporal Scales},
  journal={arXiv preprint arXiv:2510.16209},
  year={2025}
}
"""

CONFIG_INPUTS = {"default": (), "multi_view": ("video_ids",), "scale_grid": ("video_ids", "scales")}


def average_views(scores: np.ndarray, labels: np.ndarray, video_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean scores and the label of each distinct video, in order of first appearance."""
    _, first, inverse = np.unique(video_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)  # video i of the result is the i-th distinct id met
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    inverse = position[inverse.reshape(-1)]
    sums = np.zeros((len(order), scores.shape[1]))
    np.add.at(sums, inverse, scores)
    video_labels = labels[first[order]]
    if (video_labels[inverse] != labels).any():
        raise ValueError("views of one video (one video_id) carry different references")
    return sums / np.bincount(inverse)[:, None], video_labels


def accuracies(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1, top-k (k = min(5, classes)) and mean class accuracy of one row per video, in percent."""
    k = min(5, scores.shape[1])
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: the lower class index first
    top1 = ranked[:, 0] == labels
    per_class = [top1[labels == c].mean() for c in np.unique(labels)]
    return {"top1": 100 * float(top1.mean()), f"top{k}": 100 * float((ranked == labels[:, None]).any(1).mean()),
            "mean_class_acc": 100 * float(np.mean(per_class))}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VideoAccuracy(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIG_INPUTS:
            raise KeyError(f"config_name must be one of {list(CONFIG_INPUTS)}, got {self.config_name!r}")
        features = {"predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64")}
        if "video_ids" in CONFIG_INPUTS[self.config_name]:
            features["video_ids"] = datasets.Value("int64")
        if "scales" in CONFIG_INPUTS[self.config_name]:
            features["scales"] = datasets.Value("string")
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features(features))

    def _compute(self, predictions, references, video_ids=None, scales=None):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
            raise ValueError(f"predictions must be (rows, classes) scores with one row per reference; got shape "
                             f"{scores.shape} for {len(labels)} references")
        ids = np.arange(len(labels)) if video_ids is None else np.asarray(video_ids)
        if scales is None:
            return self._score(scores, labels, ids)
        scales = np.asarray(scales)
        grid = {}
        for scale in dict.fromkeys(scales.tolist()):  # in order of first appearance
            rows = scales == scale
            grid[scale] = self._score(scores[rows], labels[rows], ids[rows])
        results = {f"{name}@{scale}": value for scale, values in grid.items() for name, value in values.items()}
        for name in next(iter(grid.values())):
            if not name.startswith("num_"):
                results[f"{name}_grid_mean"] = float(np.mean([values[name] for values in grid.values()]))
        return results

    @staticmethod
    def _score(scores, labels, video_ids):
        rows = len(labels)
        scores, labels = average_views(scores, labels, video_ids)
        views = rows / len(labels)
        return {**accuracies(scores, labels), "num_videos": len(labels), "num_views": int(views) if views.is_integer()
                else views}
