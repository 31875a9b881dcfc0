"""Accuracy over a frames x resolution grid: a printed table, a CSV, a JSON and a heatmap PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Mapping

import numpy as np

from .scales import Scale


def grid_axes(results: Mapping[Scale, Mapping[str, float]]) -> tuple[list[int], list[int]]:
    return sorted({s.frames for s in results}), sorted({s.resolution for s in results})


def format_table(results: Mapping[Scale, Mapping[str, float]], metric: str = "top1") -> str:
    """Rows: frames; columns: resolution; the last row and column are means."""
    frames, resolutions = grid_axes(results)
    by_key = {(s.frames, s.resolution): v[metric] for s, v in results.items()}
    header = f"{metric:>10} | " + " ".join(f"{r:>7}px" for r in resolutions) + " |    mean"
    lines = [header, "-" * len(header)]
    for f in frames:
        row = [by_key.get((f, r), float("nan")) for r in resolutions]
        lines.append(f"{f:>8} f | " + " ".join(f"{v:>9.1f}" for v in row) + f" | {np.nanmean(row):>7.1f}")
    columns = [np.nanmean([by_key.get((f, r), float("nan")) for f in frames]) for r in resolutions]
    lines.append(f"{'mean':>10} | " + " ".join(f"{v:>9.1f}" for v in columns) + f" | {np.nanmean(list(by_key.values())):>7.1f}")
    return "\n".join(lines)


def write_results(results: Mapping[Scale, Mapping[str, float]], output_dir: str | Path, name: str = "scale_grid",
                  metric: str = "top1", title: str | None = None,
                  grid_metrics: Mapping[str, float] | None = None) -> dict[str, Path]:
    """Write <name>.csv, <name>.json and <name>.png (heatmap of `metric`) under output_dir; with `grid_metrics`
    (the `video_accuracy` module's flat result) also <name>_evaluate.json through `evaluate.save`, which adds the
    versions, time and git commit of the run."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"frames": s.frames, "resolution": s.resolution, "patch_size": s.patch_size, **values}
            for s, values in sorted(results.items(), key=lambda item: (item[0].frames, item[0].resolution))]
    csv_path = output_dir / f"{name}.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path = output_dir / f"{name}.json"
    json_path.write_text(json.dumps(rows, indent=2))
    png_path = output_dir / f"{name}.png"
    plot_heatmap(results, png_path, metric, title)
    paths = {"csv": csv_path, "json": json_path, "png": png_path}
    if grid_metrics is not None:
        import evaluate

        paths["evaluate"] = evaluate.save(output_dir / f"{name}_evaluate.json", **grid_metrics)
    return paths


def _draw_heatmap(axis, results: Mapping[Scale, Mapping[str, float]], metric: str, title: str):
    frames, resolutions = grid_axes(results)
    grid = np.full((len(frames), len(resolutions)), np.nan)
    for scale, values in results.items():
        grid[frames.index(scale.frames), resolutions.index(scale.resolution)] = values[metric]
    image = axis.imshow(grid, cmap="viridis", vmin=0, vmax=100, origin="lower", aspect="auto")
    for i in range(len(frames)):
        for j in range(len(resolutions)):
            if not np.isnan(grid[i, j]):
                axis.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center",
                          color="white" if grid[i, j] < 60 else "black", fontsize=9)
    axis.set_xticks(range(len(resolutions)), [str(r) for r in resolutions])
    axis.set_yticks(range(len(frames)), [str(f) for f in frames])
    axis.set_xlabel("resolution (px)")
    axis.set_ylabel("frames")
    axis.set_title(title)
    return image


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(results: Mapping[Scale, Mapping[str, float]], path: str | Path, metric: str = "top1",
                 title: str | None = None) -> None:
    plot_heatmaps({title or f"{metric} accuracy (%) over frames x resolution": results}, path, metric)


def plot_heatmaps(runs: Mapping[str, Mapping[Scale, Mapping[str, float]]], path: str | Path,
                  metric: str = "top1") -> None:
    """One heatmap per run (title: its name), side by side on one colour scale, in one PNG."""
    plt = _pyplot()
    frames, resolutions = grid_axes(next(iter(runs.values())))
    figure, axes = plt.subplots(1, len(runs), figsize=(len(runs) * (1.2 * len(resolutions) + 1.5) + 1,
                                                       0.8 * len(frames) + 1.6), squeeze=False)
    for axis, (name, results) in zip(axes[0], runs.items()):
        image = _draw_heatmap(axis, results, metric, name)
    figure.colorbar(image, ax=list(axes[0]), label=f"{metric} (%)")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def plot_training_curves(runs: Mapping[str, list[dict]], path: str | Path) -> None:
    """Training loss per logged step of each run (from Trainer's log_history): a line per run, and each logged
    step's point coloured by its scale (frames x resolution)."""
    plt = _pyplot()
    entries = {name: [e for e in history if "loss" in e and "step" in e] for name, history in runs.items()}
    scales = sorted({(e.get("frames", 0), e.get("resolution", 0)) for run in entries.values() for e in run})
    colours = plt.get_cmap("tab10" if len(scales) <= 10 else "viridis", max(len(scales), 1))
    figure, axis = plt.subplots(figsize=(8, 4))
    for line_style, (name, run) in zip(("-", "--", ":", "-."), entries.items()):
        if not run:
            continue
        steps = [e["step"] for e in run]
        axis.plot(steps, [e["loss"] for e in run], color="0.5", linewidth=1, linestyle=line_style, label=name)
    for index, (frames, resolution) in enumerate(scales):
        points = [(e["step"], e["loss"]) for run in entries.values() for e in run
                  if (e.get("frames", 0), e.get("resolution", 0)) == (frames, resolution)]
        axis.scatter(*zip(*points), color=colours(index), s=18, zorder=3, label=f"{frames} f x {resolution} px")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title("training loss per logged step, coloured by the step's scale")
    if any(entries.values()):
        axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_pareto(table, path: str | Path, unit: str = "ms") -> None:
    """Top-1 against cost per evaluated scale (compute_budget.ScaleCost rows), the Pareto front joined and labelled:
    the scales worth running at some budget."""
    from .compute_budget import pareto_front

    plt = _pyplot()
    front = pareto_front(table, unit)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter([r.cost(unit) for r in table], [r.top1 for r in table], color="0.6", s=22, label="evaluated scale")
    axis.plot([r.cost(unit) for r in front], [r.top1 for r in front], "o-", color="tab:red", label="Pareto front")
    for row in table:
        on_front = row in front
        axis.annotate(f"{row.scale.frames}x{row.scale.resolution}", (row.cost(unit), row.top1),
                      fontsize=8 if on_front else 6, color="black" if on_front else "0.45",
                      xytext=(4, -10), textcoords="offset points")
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(plt.matplotlib.ticker.ScalarFormatter())
    axis.ticklabel_format(axis="x", style="plain")
    axis.set_xlabel("forward milliseconds at batch 1, this machine" if unit == "ms" else "forward GFLOPs")
    axis.set_ylabel("top-1 (%)")
    axis.set_title("accuracy against cost per scale (frames x resolution)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
