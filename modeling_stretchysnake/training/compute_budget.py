"""Pick the scale to run a model at for a compute budget: the most accurate (frames, resolution) whose cost fits.

Accuracy per scale comes from the model's evaluated grid, `scale_accuracy.json` next to its weights (written by
recipes/train.py and recipes/evaluate_model.py). Cost is forward milliseconds at batch 1 measured on this machine on
first use (cached per architecture, device, thread count and torch version; the fastest of 7 interleaved runs, and
cached times that contradict the token counts are measured again), or forward GFLOPs counted.

    from modeling_stretchysnake.training.compute_budget import pick_scale
    choice, table = pick_scale(model, "outputs/stretchysnake-embedded/final", budget_ms=20)
    print(explain(choice, table, budget_ms=20))
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .scales import Scale

logger = logging.getLogger(__name__)

SCALE_ACCURACY_FILE = "scale_accuracy.json"


@dataclass
class ScaleCost:
    scale: Scale
    top1: float
    milliseconds: float | None = None
    gflops: float | None = None

    def cost(self, unit: str) -> float:
        return self.milliseconds if unit == "ms" else self.gflops


def save_scale_accuracy(results: dict[Scale, dict[str, float]], folder: str | Path) -> Path:
    """Write an evaluated grid ({Scale: {"top1": ...}}) next to a model's weights, for `pick_scale`."""
    rows = [{"frames": s.frames, "resolution": s.resolution, "patch_size": s.patch_size, **metrics}
            for s, metrics in results.items()]
    path = Path(folder) / SCALE_ACCURACY_FILE
    path.write_text(json.dumps(rows, indent=1))
    return path


def load_scale_accuracy(folder: str | Path) -> dict[Scale, float]:
    """{Scale: top-1 %} from a model folder's `scale_accuracy.json`."""
    path = Path(folder) / SCALE_ACCURACY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: evaluate the model over a grid of scales first "
                                f"(python recipes/evaluate_model.py --model {folder} --manifest ...), which writes it")
    return {Scale(r["frames"], r["resolution"], r["patch_size"]): float(r["top1"]) for r in json.loads(path.read_text())}


def _dummy_input(model, scale: Scale) -> torch.Tensor:
    parameter = next(model.parameters())
    return torch.randn(1, scale.frames, model.config.num_channels, scale.resolution, scale.resolution,
                       device=parameter.device)


def scan_gflops(config, tokens: int) -> float:
    """The selective scans' forward GFLOPs (the flop counter does not see the fused kernel): per layer, two
    directions of about 9 operations per token, channel and state."""
    return 2 * config.num_hidden_layers * 9 * tokens * config.intermediate_size * config.state_size / 1e9


def forward_gflops(model, scale: Scale) -> float:
    """Forward GFLOPs at batch 1: matmuls and convolutions counted by torch's flop counter, plus the scans."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        hidden = model.base_model(_dummy_input(model, scale), patch_size=scale.patch_size).last_hidden_state
    return counter.get_total_flops() / 1e9 + scan_gflops(model.config, hidden.shape[1])


def _cost_cache_file(model, device: torch.device) -> Path:
    config = model.config
    architecture = {key: getattr(config, key) for key in (
        "hidden_size", "num_hidden_layers", "state_size", "expand", "conv_kernel", "time_step_rank",
        "num_channels", "cls_position", "scan_backend")}
    key = json.dumps({"architecture": architecture, "device": str(device), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}, sort_keys=True)
    root = Path(os.environ.get("STRETCHYSNAKE_CACHE", Path.home() / ".cache" / "stretchysnake"))
    return root / "costs" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


SUSPICIOUS_SLOWDOWN = 1.5  # a scale with fewer tokens measured this much slower than one with more is re-measured


def _tokens(scale: Scale) -> int:
    return scale.frames * math.ceil(scale.resolution / scale.patch_size) ** 2


def inconsistent_scales(costs: dict[Scale, float]) -> set[Scale]:
    """Scales whose time cannot be right: slower by SUSPICIOUS_SLOWDOWN than a scale with more tokens (timed while
    the machine was busy, say). Token counts order the cost of this model at batch 1 closely enough that such an
    entry is worth measuring again."""
    return {a for a in costs for b in costs
            if _tokens(a) < _tokens(b) and costs[a] > SUSPICIOUS_SLOWDOWN * costs[b]}


def _time_forward(model, scales: list[Scale], repeats: int, device: torch.device) -> dict[Scale, float]:
    """The minimum of `repeats` timings per scale after a warm-up, round-robin over the scales: load on a shared
    machine only ever adds time, so the fastest run is the least disturbed one (a median keeps half of it)."""
    was_training = model.training
    model.eval()
    inputs = {scale: _dummy_input(model, scale) for scale in scales}
    times = {scale: [] for scale in scales}
    for round_index in range(repeats + 1):  # round 0 warms up (and compiles on first use)
        for scale, pixels in inputs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(pixels, patch_size=scale.patch_size)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index:
                times[scale].append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return {scale: min(values) for scale, values in times.items()}


@torch.inference_mode()
def measure_milliseconds(model, scales: list[Scale], repeats: int = 7, use_cache: bool = True,
                         remeasure: bool = False) -> dict[Scale, float]:
    """Forward milliseconds at batch 1 on this machine, cached on disk (see `_time_forward` for how). Cached
    entries that contradict the token counts (`inconsistent_scales`) are measured again, once, with the scales they
    contradict; `remeasure` measures every asked scale afresh."""
    device = next(model.parameters()).device
    cache = _cost_cache_file(model, device)
    known = {}
    if use_cache and cache.exists():
        known = {Scale(*map(int, key.split("x"))): ms for key, ms in json.loads(cache.read_text()).items()}
    missing = list(scales) if remeasure else [s for s in scales if s not in known]
    changed = False
    if missing:
        logger.info("measuring forward time at %d scale(s) on %s (cached in %s)", len(missing), device, cache)
        known.update(_time_forward(model, missing, repeats, device))
        changed = True
    asked = {s: known[s] for s in scales}
    suspicious = inconsistent_scales(asked)
    if suspicious:
        again = sorted(suspicious | {b for a in suspicious for b in asked if _tokens(a) < _tokens(b)},
                       key=lambda s: (s.frames, s.resolution))
        logger.info("re-measuring %d scale(s) whose times contradict their token counts: %s", len(again),
                    ", ".join(map(str, sorted(suspicious, key=lambda s: (s.frames, s.resolution)))))
        known.update(_time_forward(model, again, repeats, device))
        changed = True
    if use_cache and changed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({f"{s.frames}x{s.resolution}x{s.patch_size}": ms for s, ms in known.items()}))
    return {s: known[s] for s in scales}


def cost_table(model, accuracy: dict[Scale, float], unit: str = "ms", remeasure: bool = False) -> list[ScaleCost]:
    """Every evaluated scale with its top-1 and its cost in `unit` ('ms' measured here, or 'gflops')."""
    scales = sorted(accuracy, key=lambda s: (s.frames, s.resolution))
    if unit == "ms":
        costs = measure_milliseconds(model, scales, remeasure=remeasure)
        return [ScaleCost(s, accuracy[s], milliseconds=costs[s]) for s in scales]
    if unit == "gflops":
        return [ScaleCost(s, accuracy[s], gflops=forward_gflops(model, s)) for s in scales]
    raise ValueError(f"unit must be 'ms' or 'gflops', got {unit!r}")


def pareto_front(rows: list[ScaleCost], unit: str) -> list[ScaleCost]:
    """The scales no other scale beats on both accuracy and cost, cheapest first."""
    front, best = [], float("-inf")
    for row in sorted(rows, key=lambda r: (r.cost(unit), -r.top1)):
        if row.top1 > best:
            front.append(row)
            best = row.top1
    return front


def _unit_and_budget(budget_ms: float | None, budget_gflops: float | None) -> tuple[str, float]:
    return ("ms", budget_ms) if budget_ms is not None else ("gflops", budget_gflops)


def pick_scale(model, accuracy: str | Path | dict[Scale, float], budget_ms: float | None = None,
               budget_gflops: float | None = None, remeasure: bool = False) -> tuple[ScaleCost, list[ScaleCost]]:
    """The most accurate evaluated scale whose cost fits the budget (the cheaper one on a tie), and the table.

    accuracy: a model folder with `scale_accuracy.json`, or {Scale: top-1}. Give one budget: forward milliseconds
    at batch 1 on this machine, or forward GFLOPs. When nothing fits, the cheapest scale is returned.
    """
    if (budget_ms is None) == (budget_gflops is None):
        raise ValueError("give exactly one budget: budget_ms or budget_gflops")
    if not isinstance(accuracy, dict):
        accuracy = load_scale_accuracy(accuracy)
    unit, budget = _unit_and_budget(budget_ms, budget_gflops)
    if budget <= 0:
        raise ValueError(f"the budget must be positive, got {budget}")
    table = cost_table(model, accuracy, unit, remeasure=remeasure)
    fitting = [row for row in table if row.cost(unit) <= budget]
    if not fitting:
        return min(table, key=lambda r: r.cost(unit)), table
    return max(fitting, key=lambda r: (r.top1, -r.cost(unit))), table


def explain(choice: ScaleCost, table: list[ScaleCost], budget_ms: float | None = None,
            budget_gflops: float | None = None) -> str:
    """One paragraph: what was picked, what it costs, what the next better scale would have cost."""
    unit, budget = _unit_and_budget(budget_ms, budget_gflops)
    label = "ms forward here" if unit == "ms" else "GFLOPs"
    s = choice.scale
    lines = [f"budget {budget:g} {label}: running at {s.frames} frames x {s.resolution} px (patch {s.patch_size}), "
             f"top-1 {choice.top1:.1f}% on its evaluation, {choice.cost(unit):.3g} {label}"]
    if choice.cost(unit) > budget:
        lines.append("nothing fits the budget: this is the cheapest evaluated scale")
    better = [r for r in table if r.top1 > choice.top1]
    if better:
        nearest = min(better, key=lambda r: r.cost(unit))
        lines.append(f"the next more accurate scale, {nearest.scale.frames} x {nearest.scale.resolution} px "
                     f"({nearest.top1:.1f}%), costs {nearest.cost(unit):.3g} {label}")
    else:
        lines.append("no evaluated scale is more accurate")
    return "; ".join(lines)


__all__ = ["ScaleCost", "cost_table", "explain", "forward_gflops", "load_scale_accuracy", "measure_milliseconds",
           "pareto_front", "pick_scale", "save_scale_accuracy", "scan_gflops"]
