"""Evaluation metrics shipped with the package as Hugging Face `evaluate` modules (loaded from their folder)."""

from __future__ import annotations

from pathlib import Path

VIDEO_ACCURACY = Path(__file__).resolve().parent / "video_accuracy"


def load_video_accuracy(config_name: str = "default", **kwargs):
    """`evaluate.load` of the video accuracy module ("default", "multi_view" or "scale_grid"); kept in memory
    unless told otherwise, so concurrent evaluations share no cache files."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(VIDEO_ACCURACY), config_name, **kwargs)
