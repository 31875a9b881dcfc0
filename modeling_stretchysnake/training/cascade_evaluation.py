"""The cascade on a dataset: each video decoded once at the largest scale, every scale's logits from it, costs per
scale, the stages worth running, and the measured cascade (recipes/calibrate_cascade.py, evaluate_model.py
--cascade and bench/cascade.py share these)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from ..cascade import CascadeResult, ScaleCascade, cascade_summary, derive_scale, run_cascade
from ..modeling_stretchysnake import resolve_patch_size
from .compute_budget import ScaleCost, forward_gflops, measure_milliseconds, pareto_front
from .data import VideoClipDataset
from .scales import Scale


def decoded_batches(dataset: VideoClipDataset, largest: tuple[int, int], batch_size: int
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(pixel_values (batch, T, C, R, R) at `largest` = (T, R), labels) over the dataset, each video decoded once
    (an unreadable one is replaced by the next readable, as in training)."""
    frames, resolution = largest
    for start in range(0, len(dataset), batch_size):
        items = [dataset[(index, frames, resolution, None)] for index in range(start, min(start + batch_size,
                                                                                           len(dataset)))]
        yield torch.stack([item["pixel_values"] for item in items]), torch.tensor([item["labels"] for item in items])


@torch.inference_mode()
def stage_logits(model, dataset: VideoClipDataset, scales: list[tuple[int, int]], batch_size: int = 8
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (scales, videos, classes) of every scale, derived from one decode per video at the largest, and the
    labels (videos,)."""
    largest = (max(f for f, _ in scales), max(r for _, r in scales))
    device = next(model.parameters()).device
    logits, labels = [], []
    for pixel_values, batch_labels in decoded_batches(dataset, largest, batch_size):
        pixel_values = pixel_values.to(device)
        logits.append(torch.stack([model(derive_scale(pixel_values, f, r)).logits.float().cpu() for f, r in scales]))
        labels.append(batch_labels)
    return torch.cat(logits, 1), torch.cat(labels)


def scale_costs(model, scales: list[tuple[int, int]], unit: str = "gflops", remeasure: bool = False) -> list[float]:
    """Each scale's forward cost per clip: counted GFLOPs, or milliseconds measured here at batch 1 (cached per
    machine; `remeasure` times them afresh)."""
    typed = [Scale(f, r, resolve_patch_size(model.config, r, r)) for f, r in scales]
    if unit == "gflops":
        return [forward_gflops(model, scale) for scale in typed]
    if unit == "ms":
        measured = measure_milliseconds(model, typed, remeasure=remeasure)
        return [measured[scale] for scale in typed]
    raise ValueError(f"unit must be 'gflops' or 'ms', got {unit!r}")


def cheapest_first_front(scales: list[tuple[int, int]], top1: list[float], costs: list[float]
                         ) -> list[int]:
    """Indices of the scales on the accuracy-cost Pareto front (`compute_budget.pareto_front`), cheapest first, ending
    at the most accurate: the stages worth running (a scale that costs more and scores no better than a cheaper one
    adds only cost)."""
    rows = [ScaleCost(Scale(f, r, None), top1[i], gflops=costs[i]) for i, (f, r) in enumerate(scales)]
    front = {id(row) for row in pareto_front(rows, "gflops")}
    return sorted((i for i, row in enumerate(rows) if id(row) in front), key=lambda i: costs[i])


@torch.inference_mode()
def measure_cascade(model, dataset: VideoClipDataset, cascade: ScaleCascade, batch_size: int = 8,
                    return_result: bool = False) -> dict | tuple[dict, CascadeResult]:
    """Run the cascade over the dataset (batched; decode once per video): its top-1, mean cost, the share answered
    at each stage, and the wall time of the model's work per video (decoding excluded); with `return_result`, also
    the per-clip `CascadeResult`."""
    device = next(model.parameters()).device
    results, labels, seconds = [], [], 0.0
    for pixel_values, batch_labels in decoded_batches(dataset, cascade.largest_scale, batch_size):
        pixel_values = pixel_values.to(device)
        start = time.perf_counter()
        results.append(run_cascade(model, pixel_values, cascade))
        seconds += time.perf_counter() - start
        labels.append(batch_labels)
    merged = CascadeResult(*(torch.cat([getattr(r, name) for r in results]) for name in ("logits", "stage", "cost")))
    summary = cascade_summary(merged, torch.cat(labels), cascade)
    summary["ms_per_video"] = 1e3 * seconds / len(dataset)
    summary["videos"] = len(dataset)
    return (summary, merged) if return_result else summary


__all__ = ["cheapest_first_front", "decoded_batches", "measure_cascade", "scale_costs", "stage_logits"]
