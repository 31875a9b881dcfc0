"""The confidence cascade over scales against every single scale and the one-scale budget pick, in one run.

    python bench/cascade.py                                   # the main job's model (outputs/stretchysnake-embedded)
    python bench/cascade.py --model M --fixed_model F --manifest D --task glimpses --frames 2 4 8 16 --output DIR

For one model: its test split and a validation split (rendered with another seed when the manifest has none; the
task's render settings, --task) are decoded once per video at the largest scale, every scale's logits derived from
that decode. Costs per scale: forward GFLOPs counted, and forward milliseconds measured here at batch 1 (the fastest
of 7 interleaved runs). The cascade's stages are chosen from the validation front (accuracy against GFLOPs), cheapest
first, and its thresholds fitted on validation (target: the best single scale's validation top-1; `fit_cascade` tries
the front and its ordered subsets of up to three scales); it is evaluated on test, where it also runs for real,
batched, to check that it answers as its replay and to time it. A sweep of one shared threshold over the chosen
stages draws the cascade's curve; the one-scale budget pick (the best validation scale within a budget) and the
cascade fitted to the same budget are compared at every single scale's cost. The fixed-scale model (--fixed_model),
at its own scale, is the reference a user would otherwise run. Writes cascade.json, cascade.md and cascade.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import load_from_disk

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.cascade import ScaleCascade, cascade_summary, fit_cascade, replay_cascade
from modeling_stretchysnake.modeling_stretchysnake import resolve_patch_size
from modeling_stretchysnake.training.cascade_evaluation import (
    cheapest_first_front,
    measure_cascade,
    scale_costs,
    stage_logits,
)
from modeling_stretchysnake.training.compute_budget import forward_gflops
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.training.scales import Scale
from modeling_stretchysnake.training.synthetic_actions import TASKS, generate_action_dataset


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(-1) == labels).double().mean().item()


def validation_split(manifest, split: str, task: str, root: Path, per_class: int, seed: int):
    """The manifest's validation split, or one rendered for the bench (same task, another seed)."""
    if split in manifest:
        return manifest[split]
    options = dict(TASKS[task])
    return generate_action_dataset(root, {split: per_class}, seed=seed, **options)[split]


def sweep(stage_logits_test, labels, scales, costs, combine, confidence, points: int = 41) -> list[dict]:
    """The cascade over one shared threshold from 0 (everything stops at the first stage) to 1."""
    curve = []
    for value in torch.linspace(0, 1, points).tolist():
        cascade = ScaleCascade(scales, [value] * (len(scales) - 1), confidence, combine, costs)
        summary = cascade_summary(replay_cascade(stage_logits_test, cascade), labels, cascade)
        curve.append({"threshold": value, "top1": summary["top1"], "gflops": summary["mean_cost"]})
    return curve


def run_against_replay(run, replay) -> dict:
    """How far the batched run is from its replay on logits of the same decode, computed in full batches: the clips
    answered at another stage or with another class (a clip's logits can depend on its batch's size in the last
    float bits, and the clips of a batch that stop change it), and the largest logit difference among the clips
    answered at the same stage."""
    same_stage = run.stage == replay.stage
    return {"run_clips_differing": int((~same_stage | (run.logits.argmax(-1) != replay.logits.argmax(-1))).sum()),
            "run_max_logit_difference": (run.logits[same_stage] - replay.logits[same_stage]).abs().max().item()
            if same_stage.any() else None}


def budget_comparison(val_logits, val_labels, test_logits, test_labels, grid, gflops, front, args) -> list[dict]:
    """At each single scale's cost as the budget: the one-scale pick (best validation top-1 within the budget)
    against the cascade fitted on validation to the same budget, both scored on test. The cascade may use any scale
    of the front, one that costs more than the budget too: the budget bounds its mean cost on validation."""
    val_top1 = [top1(val_logits[i], val_labels) for i in range(len(grid))]
    rows = []
    for budget in sorted(set(gflops)):
        fitting = [i for i in range(len(grid)) if gflops[i] <= budget + 1e-12]
        pick = max(fitting, key=lambda i: (val_top1[i], -gflops[i]))
        cascade = fit_cascade(val_logits[front], val_labels, [grid[i] for i in front], [gflops[i] for i in front],
                              budget=budget, confidence=args.confidence, combine=args.combine)
        tested = cascade_summary(replay_cascade(test_logits[cascade.rows_in(grid)], cascade), test_labels, cascade)
        rows.append({"budget_gflops": budget, "one_scale": f"{grid[pick][0]}x{grid[pick][1]}",
                     "one_scale_top1": top1(test_logits[pick], test_labels), "one_scale_gflops": gflops[pick],
                     "cascade": " -> ".join(f"{f}x{r}" for f, r in cascade.scales),
                     "cascade_top1": tested["top1"], "cascade_gflops": tested["mean_cost"]})
    return rows


def run(args) -> dict:
    model = StretchySnakeForVideoClassification.from_pretrained(args.model).eval()
    processor = StretchySnakeVideoProcessor(decoder=args.decoder)
    manifest = load_from_disk(args.manifest)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    val_rows = validation_split(manifest, args.validation_split, args.task, output / "validation_clips",
                                args.validation_per_class, args.validation_seed)
    test_set = VideoClipDataset(manifest[args.test_split], processor, training=False, decoder=args.decoder)
    val_set = VideoClipDataset(val_rows, processor, training=False, decoder=args.decoder)
    grid = [(f, r) for f in args.frames for r in args.resolutions]
    start = time.perf_counter()
    val_logits, val_labels = stage_logits(model, val_set, grid, args.batch_size)
    test_logits, test_labels = stage_logits(model, test_set, grid, args.batch_size)
    logits_seconds = time.perf_counter() - start
    gflops = scale_costs(model, grid, "gflops")
    milliseconds = scale_costs(model, grid, "ms", remeasure=True)
    val_top1 = [top1(val_logits[i], val_labels) for i in range(len(grid))]
    singles = [{"scale": f"{f}x{r}", "val_top1": val_top1[i], "test_top1": top1(test_logits[i], test_labels),
                "gflops": gflops[i], "ms": milliseconds[i]} for i, (f, r) in enumerate(grid)]
    front = cheapest_first_front(grid, val_top1, gflops)
    cascade = fit_cascade(val_logits[front], val_labels, [grid[i] for i in front], [gflops[i] for i in front],
                          confidence=args.confidence, combine=args.combine)
    stages = cascade.rows_in(grid)
    replayed = cascade_summary(replay_cascade(test_logits[stages], cascade), test_labels, cascade)
    measured, run_result = measure_cascade(model, test_set, cascade, args.batch_size, return_result=True)
    # The run decodes at the cascade's own largest scale, the grid's logits come from the grid's largest: the
    # run is checked against a replay from its own decode.
    own_decode_replay = replay_cascade(stage_logits(model, test_set, cascade.scales, args.batch_size)[0], cascade)
    ms_cascade = ScaleCascade(cascade.scales, cascade.thresholds, cascade.confidence, cascade.combine,
                              [milliseconds[i] for i in stages], "ms")
    replayed_ms = cascade_summary(replay_cascade(test_logits[stages], ms_cascade), test_labels, ms_cascade)
    best = max(range(len(grid)), key=lambda i: (val_top1[i], -gflops[i]))  # what validation would pick
    results = {
        "model": args.model, "label": args.label, "manifest": args.manifest, "task": args.task,
        "test_videos": len(test_labels), "validation_videos": len(val_labels), "single_scales": singles,
        "best_single": singles[best], "front": [f"{grid[i][0]}x{grid[i][1]}" for i in front],
        "stages": [f"{f}x{r}" for f, r in cascade.scales],
        "cascade": cascade.to_dict(), "cascade_test": replayed, "cascade_test_mean_ms": replayed_ms["mean_cost"],
        "cascade_run": measured, **run_against_replay(run_result, own_decode_replay),
        "curve": sweep(test_logits[stages], test_labels, cascade.scales, [gflops[i] for i in stages],
                       cascade.combine, cascade.confidence),
        "budgets": budget_comparison(val_logits, val_labels, test_logits, test_labels, grid, gflops, front, args),
        "seconds_for_logits": logits_seconds,
    }
    if args.fixed_model:
        fixed = StretchySnakeForVideoClassification.from_pretrained(args.fixed_model).eval()
        frames, resolution = map(int, args.fixed_scale.split("x"))
        fixed_logits, fixed_labels = stage_logits(fixed, test_set, [(frames, resolution)], args.batch_size)
        scale = Scale(frames, resolution, resolve_patch_size(fixed.config, resolution, resolution))
        results["fixed_model"] = {"scale": f"{frames}x{resolution}", "test_top1": top1(fixed_logits[0], fixed_labels),
                                  "gflops": forward_gflops(fixed, scale),
                                  "ms": scale_costs(fixed, [(frames, resolution)], "ms", remeasure=True)[0]}
    return results


def markdown(results: dict) -> str:
    best, cascade, tested = results["best_single"], results["cascade"], results["cascade_test"]
    lines = [f"### {results['label']}: {results['model']} ({results['task']}: {results['test_videos']} test videos, "
             f"thresholds fitted on {results['validation_videos']} validation videos)", "",
             "| scale | validation top-1 | test top-1 | GFLOPs | ms here |", "|---|---|---|---|---|"]
    for row in results["single_scales"]:
        lines.append(f"| {row['scale']} | {row['val_top1']:.1f} | {row['test_top1']:.1f} | {row['gflops']:.4f} | "
                     f"{row['ms']:.1f} |")
    shares = ", ".join(f"{scale} {share:.0f}%" for scale, share in tested["answered_at"].items())
    lines += ["", f"Cascade {' -> '.join(results['stages'])} (chosen from the validation front "
              f"{', '.join(results['front'])}; {cascade['confidence']}, {cascade['combine']}), "
              f"thresholds {[round(t, 4) for t in cascade['thresholds']]}: test top-1 **{tested['top1']:.1f}%** at "
              f"**{tested['mean_cost']:.4f} GFLOPs** ({results['cascade_test_mean_ms']:.1f} ms) per video; answered at "
              f"{shares}. The best single scale on validation, {best['scale']}: test top-1 {best['test_top1']:.1f}% at "
              f"{best['gflops']:.4f} GFLOPs ({best['ms']:.1f} ms): the cascade spends "
              f"{tested['mean_cost'] / best['gflops']:.2f}x its compute, {tested['top1'] - best['test_top1']:+.1f} "
              f"points. Run for real (batched): top-1 {results['cascade_run']['top1']:.1f}%, "
              f"{results['cascade_run']['ms_per_video']:.1f} ms of model time per video; clips answered otherwise than "
              f"in the replay: {results['run_clips_differing']} (largest logit difference at the same stage "
              f"{results['run_max_logit_difference'] or 0:.1e})."]
    if "fixed_model" in results:
        fixed = results["fixed_model"]
        lines.append(f"The fixed-scale model at its scale {fixed['scale']}: test top-1 {fixed['test_top1']:.1f}% at "
                     f"{fixed['gflops']:.4f} GFLOPs ({fixed['ms']:.1f} ms).")
    lines += ["", "| budget (GFLOPs) | one-scale pick | its top-1 | cascade fitted to the budget | its top-1 | its "
              "GFLOPs |", "|---|---|---|---|---|---|"]
    for row in results["budgets"]:
        lines.append(f"| {row['budget_gflops']:.4f} | {row['one_scale']} | {row['one_scale_top1']:.1f} | "
                     f"{row['cascade']} | {row['cascade_top1']:.1f} | {row['cascade_gflops']:.4f} |")
    return "\n".join(lines)


def plot(all_results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    figure, axes = plt.subplots(1, len(all_results), figsize=(6 * len(all_results), 4.5), squeeze=False)
    for axis, results in zip(axes[0], all_results):
        singles = results["single_scales"]
        axis.scatter([s["gflops"] for s in singles], [s["test_top1"] for s in singles], color="tab:blue",
                     label="single scale")
        for s in singles:
            axis.annotate(s["scale"], (s["gflops"], s["test_top1"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        curve = sorted(results["curve"], key=lambda p: p["gflops"])
        axis.plot([p["gflops"] for p in curve], [p["top1"] for p in curve], color="tab:red", marker=".",
                  label="cascade, threshold swept")
        tested = results["cascade_test"]
        axis.scatter([tested["mean_cost"]], [tested["top1"]], color="tab:red", marker="*", s=200, zorder=3,
                     label="cascade, fitted on validation")
        if "fixed_model" in results:
            fixed = results["fixed_model"]
            axis.scatter([fixed["gflops"]], [fixed["test_top1"]], color="black", marker="x", s=80,
                         label=f"fixed-scale model ({fixed['scale']})")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("mean forward GFLOPs per video")
        axis.set_ylabel("test top-1 (%)")
        axis.set_title(f"{results['label']} ({results['task']} task, {results['test_videos']} test videos)", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["outputs/stretchysnake-embedded/final"])
    parser.add_argument("--fixed_model", nargs="+", default=None, help="one per --model (or none)")
    parser.add_argument("--fixed_scale", nargs="+", default=["8x56"],
                        help="FRAMESxRESOLUTION each fixed model was trained at (one, or one per --model)")
    parser.add_argument("--manifest", nargs="+", default=["outputs/generated_actions/manifest"])
    parser.add_argument("--task", nargs="+", default=["clear"], help="render settings of each validation split")
    parser.add_argument("--label", nargs="+", default=None, help="a name per model for the tables and the plot "
                        "(default: the model folder's parent's name)")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--validation_split", default="validation")
    parser.add_argument("--validation_per_class", type=int, default=20)
    parser.add_argument("--validation_seed", type=int, default=1000)
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[56, 84, 112, 168])
    parser.add_argument("--confidence", default="max_probability")
    parser.add_argument("--combine", default="best", help="mean, last, or best: the better on validation")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--output", default="outputs/cascade-bench")
    args = parser.parse_args(argv)
    count = len(args.model)
    if len(args.manifest) != count or len(args.task) != count or (args.fixed_model and len(args.fixed_model) != count) \
            or (args.label and len(args.label) != count):
        parser.error("give one --manifest, --task (and --fixed_model, --label) per --model")
    if len(args.fixed_scale) not in (1, count):
        parser.error("give one --fixed_scale, or one per --model")
    all_results = []
    for i in range(count):
        case = argparse.Namespace(**{**vars(args), "model": args.model[i], "manifest": args.manifest[i],
                                     "task": args.task[i], "output": str(Path(args.output) / f"case{i}"),
                                     "label": args.label[i] if args.label else Path(args.model[i]).parent.name,
                                     "fixed_model": args.fixed_model[i] if args.fixed_model else None,
                                     "fixed_scale": args.fixed_scale[i if len(args.fixed_scale) > 1 else 0]})
        all_results.append(run(case))
        print(markdown(all_results[-1]), flush=True)
    output = Path(args.output)
    (output / "cascade.json").write_text(json.dumps(all_results, indent=1))
    (output / "cascade.md").write_text("\n\n".join(markdown(r) for r in all_results) + "\n")
    plot(all_results, output / "cascade.png")
    print(f"\nwritten: {output / 'cascade.json'}, {output / 'cascade.md'}, {output / 'cascade.png'}")
    return all_results


if __name__ == "__main__":
    main()
