"""A confidence cascade over scales: one set of weights, the cheapest scale first, a larger one only for the clips
the smaller ones are unsure of.

Every scale is the same network, so a video can be answered at 4 x 56 when that is enough and at 16 x 168 when it
is not. The cascade runs its scales in order (cheapest first); after each one, a clip whose confidence reaches that
stage's threshold stops and the rest go on. The evidence is either the last scale's logits or the running mean of
the logits of every scale run so far (`combine`). A video is decoded once, at the largest scale of the cascade:
smaller scales take a subset of its frames and resize them (`derive_scale`).

    cascade = ScaleCascade.from_dict(model.config.cascade)      # a fitted rule (recipes/calibrate_cascade.py)
    result = run_cascade(model, pixel_values, cascade)          # pixel_values at cascade.largest_scale
    result.logits, result.stage, result.cost                    # per clip: evidence, stage that answered, cost

The same decisions can be replayed from precomputed logits (`replay_cascade`), which is how thresholds are fitted
(`fit_cascade`) and how a threshold sweep is drawn without running the model again.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

CONFIDENCES = ("max_probability", "margin")
COMBINES = ("mean", "last")
NEVER = 2.0  # a threshold no confidence reaches (both kinds are at most 1): every clip goes on to the next stage


@dataclass
class ScaleCascade:
    """scales: (frames, resolution) per stage, cheapest first. thresholds: one per stage but the last; a clip stops
    after stage i when its confidence is at least thresholds[i]. confidence: "max_probability" (the top class's
    softmax probability) or "margin" (top-1 minus top-2 probability). combine: "mean" (running mean of the logits
    of the stages run so far) or "last" (the last stage's logits). costs: each stage's cost in cost_unit (e.g.
    forward GFLOPs per clip), for reporting what the cascade spent; fitted: how the thresholds were chosen."""

    scales: list[tuple[int, int]]
    thresholds: list[float]
    confidence: str = "max_probability"
    combine: str = "mean"
    costs: list[float] | None = None
    cost_unit: str = "gflops"
    fitted: dict = field(default_factory=dict)

    def __post_init__(self):
        self.scales = [(int(frames), int(resolution)) for frames, resolution in self.scales]
        self.thresholds = [float(t) for t in self.thresholds]
        if not self.scales:
            raise ValueError("a cascade needs at least one scale")
        if len(self.thresholds) != len(self.scales) - 1:
            raise ValueError(f"a cascade of {len(self.scales)} scales needs {len(self.scales) - 1} thresholds "
                             f"(the last scale always answers), got {len(self.thresholds)}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.costs is not None and len(self.costs) != len(self.scales):
            raise ValueError(f"give one cost per scale: {len(self.scales)} scales, {len(self.costs)} costs")

    @property
    def largest_scale(self) -> tuple[int, int]:
        """What to decode a video at: the most frames and the highest resolution any stage uses."""
        return max(f for f, _ in self.scales), max(r for _, r in self.scales)

    def rows_in(self, scales: list[tuple[int, int]]) -> list[int]:
        """The index in `scales` of each of this cascade's stages: which rows of a grid's logits to replay it on."""
        scales = [tuple(scale) for scale in scales]
        return [scales.index(scale) for scale in self.scales]

    def to_dict(self) -> dict:
        return {key: [list(s) for s in value] if key == "scales" else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict | None) -> ScaleCascade:
        if not values:
            raise ValueError("this model has no cascade rule (config.cascade is empty): fit one with "
                             "python recipes/calibrate_cascade.py --model FOLDER --manifest DATA")
        return cls(**values)


@dataclass
class CascadeClassifierOutput(ModelOutput):
    """The pipeline's model output with a cascade: the evidence (batch, classes), the stage that answered and the
    cost spent, per clip."""

    logits: torch.Tensor | None = None
    stage: torch.Tensor | None = None
    cost: torch.Tensor | None = None


@dataclass
class CascadeResult:
    """Per clip: logits (batch, classes), the evidence the answer came from; stage (batch,), the index of the stage
    that answered; cost (batch,), the summed cost of the stages it ran (zeros without costs)."""

    logits: torch.Tensor
    stage: torch.Tensor
    cost: torch.Tensor


def confidence_of(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """(batch, classes) -> (batch,): the top class's probability, or its margin over the second."""
    probabilities = logits.float().softmax(-1)
    if kind == "max_probability":
        return probabilities.max(-1).values
    if kind == "margin":
        if probabilities.shape[-1] < 2:
            return probabilities[..., 0]
        top2 = probabilities.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    raise ValueError(f"confidence must be one of {CONFIDENCES}, got {kind!r}")


def frame_subset(available: int, frames: int) -> torch.Tensor:
    """Indices of `frames` frames spread over `available` decoded ones (both ends kept), as the uniform sampler
    spreads frames over a video: a clip decoded at T frames gives its T' < T frames without decoding again."""
    if frames > available:
        raise ValueError(f"cannot take {frames} frames from a clip decoded at {available}")
    return torch.linspace(0, available - 1, frames).round().long()


def derive_scale(pixel_values: torch.Tensor, frames: int, resolution: int) -> torch.Tensor:
    """(batch, T, C, R, R) decoded at the largest scale -> (batch, frames, C, resolution, resolution): a frame
    subset, resized with antialiasing (the processor's resize; normalisation commutes with it, both being linear)."""
    batch, available, channels, height, width = pixel_values.shape
    clip = pixel_values[:, frame_subset(available, frames)]
    if (height, width) == (resolution, resolution):
        return clip
    resized = F.interpolate(clip.flatten(0, 1), size=(resolution, resolution), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.unflatten(0, (batch, frames))


class _Evidence:
    """The running evidence of the clips still in the cascade."""

    def __init__(self, combine: str):
        self.combine = combine
        self.total = None

    def add(self, logits: torch.Tensor, stage: int) -> torch.Tensor:
        if self.combine == "last":
            return logits
        self.total = logits if self.total is None else self.total + logits
        return self.total / (stage + 1)

    def keep(self, rows: torch.Tensor) -> None:
        if self.total is not None:
            self.total = self.total[rows]


def _step(evidence, logits, stage, cascade, active, out_logits, out_stage):
    """Record the clips that stop at `stage`; returns the mask of those that go on."""
    combined = evidence.add(logits, stage)
    if stage == len(cascade.scales) - 1:
        go_on = torch.zeros(len(active), dtype=torch.bool, device=combined.device)
    else:
        go_on = confidence_of(combined, cascade.confidence) < cascade.thresholds[stage]
    stop = ~go_on
    out_logits[active[stop]] = combined[stop]
    out_stage[active[stop]] = stage
    evidence.keep(go_on)
    return go_on


def _costs(cascade: ScaleCascade, stage: torch.Tensor) -> torch.Tensor:
    if cascade.costs is None:
        return torch.zeros(len(stage))
    spent = torch.tensor(cascade.costs, dtype=torch.float64).cumsum(0)
    return spent[stage.cpu()]


@torch.inference_mode()
def run_cascade(model, pixel_values: torch.Tensor, cascade: ScaleCascade) -> CascadeResult:
    """Classify a batch of clips decoded at `cascade.largest_scale`: each stage runs on the clips still undecided
    only (a clip that stops leaves the batch), so a batch gives the same answers as its clips one by one (up to the
    last float bits of the logits, which a batch's size can change on some backends)."""
    batch = pixel_values.shape[0]
    active = torch.arange(batch, device=pixel_values.device)
    evidence = _Evidence(cascade.combine)
    out_logits, out_stage = None, torch.full((batch,), -1, dtype=torch.long, device=pixel_values.device)
    for stage, (frames, resolution) in enumerate(cascade.scales):
        logits = model(derive_scale(pixel_values[active], frames, resolution)).logits.float()
        if out_logits is None:
            out_logits = logits.new_empty(batch, logits.shape[-1])
        go_on = _step(evidence, logits, stage, cascade, active, out_logits, out_stage)
        active = active[go_on]
        if not len(active):
            break
    return CascadeResult(out_logits, out_stage, _costs(cascade, out_stage))


def replay_cascade(stage_logits: torch.Tensor, cascade: ScaleCascade) -> CascadeResult:
    """The cascade's decisions from precomputed logits (stages, clips, classes), one row per scale of the cascade:
    what `run_cascade` would answer, without running the model."""
    if stage_logits.shape[0] != len(cascade.scales):
        raise ValueError(f"need logits for each of the {len(cascade.scales)} scales, got {stage_logits.shape[0]}")
    clips = stage_logits.shape[1]
    active = torch.arange(clips)
    evidence = _Evidence(cascade.combine)
    out_logits = stage_logits.new_empty(stage_logits.shape[1:]).float()
    out_stage = torch.full((clips,), -1, dtype=torch.long)
    for stage in range(len(cascade.scales)):
        go_on = _step(evidence, stage_logits[stage, active].float(), stage, cascade, active, out_logits, out_stage)
        active = active[go_on]
        if not len(active):
            break
    return CascadeResult(out_logits, out_stage, _costs(cascade, out_stage))


def cascade_summary(result: CascadeResult, labels: torch.Tensor, cascade: ScaleCascade) -> dict:
    """Top-1 (%), mean cost and the share of clips answered at each stage."""
    labels = labels.to(result.logits.device)
    shares = torch.bincount(result.stage.cpu(), minlength=len(cascade.scales)).double() / len(labels)
    return {"top1": 100.0 * (result.logits.argmax(-1) == labels).double().mean().item(),
            "mean_cost": result.cost.double().mean().item(),
            "answered_at": {f"{f}x{r}": 100.0 * share for (f, r), share in zip(cascade.scales, shares.tolist())}}


def fit_cascade(stage_logits: torch.Tensor, labels: torch.Tensor, scales: list[tuple[int, int]],
                costs: list[float], target_top1: float | None = None, budget: float | None = None,
                confidence: str = "max_probability", combine: str = "best", cost_unit: str = "gflops",
                candidates: int = 200, choose_stages: bool = True, max_stages: int = 3) -> ScaleCascade:
    """A cascade over `scales` (cheapest first) fitted to validation logits (stages, clips, classes).

    Target: the cheapest rule whose top-1 reaches `target_top1` (default: the best single scale's top-1 on these clips);
    or, with `budget`, the most accurate rule whose mean cost fits it. With `choose_stages`, the whole list and every
    ordered subset of at most `max_stages` scales are tried as the cascade's stages (a stage that stops few clips costs
    the rest more than it saves, and skipping it is cheaper) and the best rule kept; without, every scale is a stage.
    combine: one of COMBINES, or "best" (the default): each is tried and the better rule kept (the running mean can be
    dragged by a small scale's wrong guess, the last scale's logits drop its evidence). Thresholds of one set of stages:
    one threshold shared by every stage over `candidates` quantiles of the clips' confidences, then each stage's
    threshold in turn over the same candidates while the target holds (coordinate descent, until nothing improves)."""
    labels = labels.cpu()
    single = [100.0 * (stage_logits[i].argmax(-1).cpu() == labels).double().mean().item() for i in range(len(scales))]
    if target_top1 is None and budget is None:
        target_top1 = max(single)

    def rank(score):  # (top1, cost) -> sort key: a rule that meets the target (or fits the budget) first, then the
        top1, cost = score  # cheaper (target) or the more accurate (budget); short of it, the nearest to it
        if budget is None:
            met = top1 >= target_top1 - 1e-9
            return (met, -cost, top1) if met else (met, top1, -cost)
        fits = cost <= budget + 1e-12
        return (fits, top1, -cost) if fits else (fits, -cost, top1)

    if combine != "best" and combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES} or 'best', got {combine!r}")
    everything = list(range(len(scales)))
    subsets = [everything]
    if choose_stages:  # the full set first: it is kept on ties
        subsets += [subset for size in range(1, min(max_stages, len(scales) - 1) + 1)
                    for subset in itertools.combinations(everything, size)]
    best = None
    for way in COMBINES if combine == "best" else (combine,):  # the first kept on ties: "mean"
        for subset in subsets:
            subset = list(subset)
            fitted = _fit_thresholds(stage_logits[subset].float().cpu(), labels, [costs[i] for i in subset],
                                     confidence, way, rank, candidates)
            if best is None or rank(fitted[1]) > rank(best[3]):
                best = (way, subset, *fitted)
    way, subset, thresholds, (top1, mean_cost) = best
    cascade = ScaleCascade([scales[i] for i in subset], thresholds, confidence, way, [costs[i] for i in subset],
                           cost_unit)
    cascade.fitted = {"target_top1": target_top1, "budget": budget, "clips": int(len(labels)), "top1": top1,
                      "mean_cost": mean_cost, "offered": [f"{f}x{r}" for f, r in scales],
                      "single_scale_top1": {f"{f}x{r}": t for (f, r), t in zip(scales, single)}}
    return cascade


def _fit_thresholds(stage_logits, labels, costs, confidence, combine, rank, candidates):
    """The best thresholds (by `rank` of (top1, mean cost)) for a cascade over every given stage, and their score."""
    stages = len(costs)
    # A clip that reaches stage s has run every stage before it, so its evidence there does not depend on the
    # thresholds: compute every stage's evidence, confidence and correctness once, then score thresholds cheaply.
    evidence = _Evidence(combine)
    combined = [evidence.add(stage_logits[i], i) for i in range(stages)]
    confidences = torch.stack([confidence_of(c, confidence) for c in combined]).double()  # (stages, clips)
    correct = torch.stack([c.argmax(-1) == labels for c in combined]).double()
    spent = torch.tensor(costs, dtype=torch.float64).cumsum(0)
    quantiles = torch.linspace(0, 1, candidates, dtype=torch.float64)
    grid = sorted(set(torch.quantile(confidences.flatten(), quantiles).tolist()) | {NEVER})
    # numpy from here: many small array operations, which torch would spread over threads at a cost of its own
    confidences, correct, spent = confidences.numpy(), correct.numpy(), spent.numpy()
    clips = confidences.shape[1]

    def scores(rules):  # K threshold lists -> K (top1, mean cost), computed together
        thresholds = np.asarray(rules, dtype=np.float64).reshape(len(rules), stages - 1)
        stops = np.concatenate([confidences[None, :-1] >= thresholds[:, :, None],
                                np.ones((len(rules), 1, clips), dtype=bool)], 1)
        stage = stops.argmax(1)  # (K, clips): the first stage that stops each clip
        right = np.take_along_axis(correct, stage, 0)
        return list(zip((100.0 * right.mean(-1)).tolist(), spent[stage].mean(-1).tolist()))

    def keep_better(rules, best, best_score):  # in order: the first of equals stays
        improved = False
        for candidate, candidate_score in zip(rules, scores(rules)):
            if rank(candidate_score) > rank(best_score):
                best, best_score, improved = candidate, candidate_score, True
        return best, best_score, improved

    best = [NEVER] * (stages - 1)
    best_score = scores([best])[0]
    if stages > 1:  # one shared threshold
        best, best_score, _ = keep_better([[value] * (stages - 1) for value in grid], best, best_score)
    improved = stages > 2
    while improved:  # then each stage's own; a stage's candidates differ from the best in that stage only
        improved = False
        for stage in range(stages - 1):
            best, best_score, changed = keep_better([best[:stage] + [value] + best[stage + 1:] for value in grid],
                                                    best, best_score)
            improved |= changed
    return best, best_score


__all__ = ["CascadeClassifierOutput", "CascadeResult", "ScaleCascade", "cascade_summary", "confidence_of",
           "derive_scale", "fit_cascade", "frame_subset", "replay_cascade", "run_cascade"]
