"""The paper's central experiment at CPU size: fixed-scale training vs flexible training, same steps and seed.

    python bench/flexibility.py                       # all six runs, seed 0
    python bench/flexibility.py --runs fixed static_tokens --seed 1                # a second seed of two of them

Data: the generated moving-square action dataset (`clear` task: 5 classes that need motion; 300 train / 40 test
videos per class). Model: the main job's (96 x 4 layers, base grid 4 x 4 = 56 px with patch 14, sin-cos position
init, CLS at both ends), trained from scratch by recipes/train.py, one subprocess per run, all with the same
steps, seed and optimiser (lr 2e-3, cosine, 10 warm-up steps, batch 8):
- fixed: the usual recipe, one scale (8 frames x 56 px, patch 14), the paper's "vanilla" model;
- the five flexible variants on the same budget, with scale sets sized for this model (see RUNS): frames
  {4, 8} and resolutions {56, 84, 112} where a variant varies them.
Every model is evaluated on the same frames x resolution grid, half of it unseen in training (16 frames, 168 px).
Patch size at evaluation follows each model's scale mode: patch 14 with interpolated position embeddings for
fixed, temporal and static_patches (the "vanilla" protocol; the token grid grows with the resolution);
resolution / 4 (static tokens) for the others.
Prints each model's grid, then a summary: grid mean, accuracy at the fixed model's own scale, the goals, and
the variants ranked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_RESOLUTION, BASE_PATCH = 56, 14
FIXED_SCALE = (8, BASE_RESOLUTION)
FLEX_FRAMES = ["--train_frames", "4", "8"]
FLEX_RESOLUTIONS = ["--train_resolutions", "56", "84", "112"]
RUNS = {
    "fixed": ["--variant", "static_patches", "--train_frames", "8", "--train_resolutions", str(BASE_RESOLUTION),
              "--train_patch_sizes", str(BASE_PATCH)],
    "temporal": ["--variant", "temporal", *FLEX_FRAMES, "--train_resolutions", str(BASE_RESOLUTION),
                 "--train_patch_sizes", str(BASE_PATCH)],
    "static_patches": ["--variant", "static_patches", *FLEX_FRAMES, *FLEX_RESOLUTIONS,
                       "--train_patch_sizes", str(BASE_PATCH)],
    "flexivit": ["--variant", "flexivit", *FLEX_FRAMES, "--train_resolutions", str(BASE_RESOLUTION),
                 "--train_patch_sizes", "7", "8", "14", "28"],
    "flex_all": ["--variant", "flex_all", *FLEX_FRAMES, *FLEX_RESOLUTIONS],
    "static_tokens": ["--variant", "static_tokens", *FLEX_FRAMES, *FLEX_RESOLUTIONS],
}
OPTIMISER = ["--learning_rate", "2e-3", "--warmup_steps", "10", "--logging_steps", "50"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--train_per_class", type=int, default=300)
    parser.add_argument("--eval_per_class", type=int, default=40)
    parser.add_argument("--task", default="clear", help="synthetic_actions.TASKS: clear or noisy")
    parser.add_argument("--eval_frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--eval_resolutions", type=int, nargs="+", default=[56, 84, 112, 168])
    parser.add_argument("--output_dir", default="outputs/bench_flexibility")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from modeling_stretchysnake.training.synthetic_actions import load_or_generate

    out = Path(args.output_dir)
    data = out / f"data_{args.task}"  # one render per setting; the data seed stays 0 so seeds share the clips
    load_or_generate(data, {"train": args.train_per_class, "test": args.eval_per_class}, seed=0, task=args.task)
    results, wall = {}, {}
    for name in args.runs:
        command = [sys.executable, str(ROOT / "recipes" / "train.py"), *RUNS[name],
                   "--manifest", str(data / "manifest"), "--output_dir", str(out / f"{name}_seed{args.seed}"),
                   "--max_steps", str(args.steps), "--seed", str(args.seed), *OPTIMISER,
                   "--eval_frames", *map(str, args.eval_frames), "--eval_resolutions", *map(str, args.eval_resolutions)]
        run_dir = out / f"{name}_seed{args.seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "train.log"  # written as the run goes: `tail -f` it to follow progress
        print(f"{name}: training, log {log}", flush=True)
        start = time.perf_counter()
        with log.open("w") as handle:
            completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                       env={"PYTHONPATH": str(ROOT), **clean_env()})
        wall[name] = time.perf_counter() - start
        if completed.returncode != 0:
            print(f"{name}: failed\n{log.read_text()[-2000:]}")
            continue
        rows = json.loads((run_dir / "scale_grid.json").read_text())
        results[name] = {(r["frames"], r["resolution"]): r["top1"] for r in rows}
        print(f"{name}: {wall[name] / 60:.1f} min; grid mean {grid_mean(results[name]):.1f}", flush=True)

    (out / f"summary_seed{args.seed}.json").write_text(
        json.dumps({n: {f"{f}x{r}": v for (f, r), v in g.items()} for n, g in results.items()}, indent=2))
    print(f"\n{len(args.runs)} runs of {args.steps} steps x 8 clips, seed {args.seed}, task {args.task}; test: "
          f"{args.eval_per_class} videos/class, 5 classes (chance 20%); top-1 (%)")
    for name, grid in results.items():
        print(f"\n{name}\n{grid_table(grid, args.eval_frames, args.eval_resolutions)}")
    fixed_label = f"@ {FIXED_SCALE[0]}x{FIXED_SCALE[1]}"
    print(f"\n{'run':<16} {'grid mean':>10} {'worst cell':>10} {fixed_label:>8} {'minutes':>8}")
    for name, grid in sorted(results.items(), key=lambda item: -grid_mean(item[1])):  # ranked by grid mean
        print(f"{name:<16} {grid_mean(grid):>10.1f} {min(grid.values()):>10.1f} "
              f"{grid.get(FIXED_SCALE, float('nan')):>8.1f} {wall[name] / 60:>8.1f}")
    for line in goal_lines(results):
        print(line)
    flexible = {n: grid_mean(g) for n, g in results.items() if n != "fixed"}
    if flexible:
        best = max(flexible, key=flexible.get)
        print(f"best variant on this budget: {best} (grid mean {flexible[best]:.1f})")


def goal_lines(results: dict) -> list[str]:
    """The claim at converged accuracy, as measured goals."""
    lines = []
    if "fixed" in results:
        fixed = results["fixed"]
        own = fixed.get(FIXED_SCALE, float("nan"))
        worst = min(v for scale, v in fixed.items() if scale != FIXED_SCALE) if len(fixed) > 1 else float("nan")
        lines.append(f"fixed: {own:.1f} at its own scale (goal >= 90: converged), {own - worst:.1f} points lost at "
                     f"its worst other cell (goal >= 30)")
    if "static_tokens" in results:
        tokens = results["static_tokens"]
        spread = max(tokens.values()) - min(tokens.values())
        lines.append(f"static_tokens: every cell within {spread:.1f} points of its best (goal <= 5)")
        if "fixed" in results:
            lines.append(f"static_tokens vs fixed: grid mean {grid_mean(tokens) - grid_mean(results['fixed']):+.1f} points "
                         "(goal >= +20)")
    return lines


def clean_env():
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def grid_mean(grid) -> float:
    return sum(grid.values()) / len(grid)


def grid_table(grid, frames, resolutions) -> str:
    lines = [f"{'':>8} " + " ".join(f"{r:>6}px" for r in resolutions)]
    for f in frames:
        lines.append(f"{f:>6} f " + " ".join(f"{grid.get((f, r), float('nan')):>8.1f}" for r in resolutions))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
