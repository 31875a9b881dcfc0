"""The paper's central experiment at CPU size: fixed-scale training vs flexible training, same steps and seed.

    python bench/flexibility.py                       # all six runs, about 55 minutes on 2 CPU cores
    python bench/flexibility.py --runs fixed static_tokens static_patches     # the central three, about 25

Data: the generated moving-square action dataset (5 classes that need motion; 200 train / 40 test videos per
class). Model: 96 x 4 layers, base grid 4 x 4 (64 px, patch 16), trained from scratch by recipes/train.py, one
subprocess per run, all with the same steps, seed and optimiser (lr 4e-3, cosine, 20 warm-up steps):
- fixed: the usual recipe, one scale (8 frames x 64 px, patch 16);
- the five flexible variants on the same budget, with scale sets sized for this model (see RUNS): frames
  {4, 8} and resolutions {32, 48, 64} where a variant varies them.
Every model is evaluated on the same frames x resolution grid, most of it unseen in training (16 frames, 96 px).
Patch size at evaluation follows each model's scale mode: patch 16 with interpolated position embeddings for
fixed, temporal and static_patches (the "vanilla" protocol); resolution / 4 (static tokens) for the others.
Prints each model's grid, then a summary: grid mean, accuracy at the fixed model's own scale, and the goals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_RESOLUTION = 64
FIXED_SCALE = (8, BASE_RESOLUTION)
FLEX_FRAMES = ["--train_frames", "4", "8"]
FLEX_RESOLUTIONS = ["--train_resolutions", "32", "48", "64"]
RUNS = {
    "fixed": ["--variant", "static_patches", "--train_frames", "8", "--train_resolutions", str(BASE_RESOLUTION)],
    "temporal": ["--variant", "temporal", *FLEX_FRAMES, "--train_resolutions", str(BASE_RESOLUTION)],
    "static_patches": ["--variant", "static_patches", *FLEX_FRAMES, *FLEX_RESOLUTIONS],
    "flexivit": ["--variant", "flexivit", *FLEX_FRAMES, "--train_resolutions", str(BASE_RESOLUTION),
                 "--train_patch_sizes", "8", "16", "32"],
    "flex_all": ["--variant", "flex_all", *FLEX_FRAMES, *FLEX_RESOLUTIONS],
    "static_tokens": ["--variant", "static_tokens", *FLEX_FRAMES, *FLEX_RESOLUTIONS],
}
OPTIMISER = ["--learning_rate", "4e-3", "--warmup_steps", "20", "--logging_steps", "50"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train_per_class", type=int, default=200)
    parser.add_argument("--eval_per_class", type=int, default=40)
    parser.add_argument("--eval_frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--eval_resolutions", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--output_dir", default="outputs/bench_flexibility")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from modeling_stretchysnake.synthetic_actions import generate_action_dataset

    out = Path(args.output_dir)
    data = out / f"data_{args.train_per_class}x{args.eval_per_class}_seed{args.seed}"
    if not (data / "manifest").exists():
        generate_action_dataset(data, {"train": args.train_per_class, "test": args.eval_per_class}, seed=args.seed)
    results, wall = {}, {}
    for name in args.runs:
        command = [sys.executable, str(ROOT / "recipes" / "train.py"), *RUNS[name],
                   "--manifest", str(data / "manifest"), "--output_dir", str(out / name), "--max_steps", str(args.steps),
                   "--base_resolution", str(BASE_RESOLUTION), "--seed", str(args.seed), *OPTIMISER,
                   "--eval_frames", *map(str, args.eval_frames), "--eval_resolutions", *map(str, args.eval_resolutions)]
        (out / name).mkdir(parents=True, exist_ok=True)
        log = out / name / "train.log"  # written as the run goes: `tail -f` it to follow progress
        print(f"{name}: training, log {log}", flush=True)
        start = time.perf_counter()
        with log.open("w") as handle:
            completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                       env={"PYTHONPATH": str(ROOT), **_env()})
        wall[name] = time.perf_counter() - start
        if completed.returncode != 0:
            print(f"{name}: failed\n{log.read_text()[-2000:]}")
            continue
        rows = json.loads((out / name / "scale_grid.json").read_text())
        results[name] = {(r["frames"], r["resolution"]): r["top1"] for r in rows}
        print(f"{name}: {wall[name] / 60:.1f} min; grid mean {_mean(results[name]):.1f}", flush=True)

    (out / "summary.json").write_text(json.dumps({n: {f"{f}x{r}": v for (f, r), v in g.items()} for n, g in results.items()}, indent=2))
    print(f"\n{len(args.runs)} runs of {args.steps} steps x 8 clips, seed {args.seed}; test: {args.eval_per_class} videos/class, "
          "5 classes (chance 20%); top-1 (%)")
    for name, grid in results.items():
        print(f"\n{name}\n{_grid_table(grid, args.eval_frames, args.eval_resolutions)}")
    fixed_label = f"@ {FIXED_SCALE[0]}x{FIXED_SCALE[1]}"
    print(f"\n{'run':<16} {'grid mean':>10} {fixed_label:>8} {'minutes':>8}")
    for name, grid in results.items():
        print(f"{name:<16} {_mean(grid):>10.1f} {grid.get(FIXED_SCALE, float('nan')):>8.1f} {wall[name] / 60:>8.1f}")
    if "fixed" in results:
        fixed = results["fixed"]
        for name in ("static_tokens", "static_patches"):
            if name in results:
                gain = _mean(results[name]) - _mean(fixed)
                own = results[name].get(FIXED_SCALE, float("nan")) - fixed.get(FIXED_SCALE, float("nan"))
                print(f"{name} vs fixed: grid mean {gain:+.1f} points (goal >= +15), at {FIXED_SCALE[0]}x{FIXED_SCALE[1]} "
                      f"{own:+.1f} points (goal >= -2)")
        flexible = {n: _mean(g) for n, g in results.items() if n != "fixed"}
        if flexible:
            best = max(flexible, key=flexible.get)
            print(f"best variant on this budget: {best} (grid mean {flexible[best]:.1f})")


def _env():
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def _mean(grid) -> float:
    return sum(grid.values()) / len(grid)


def _grid_table(grid, frames, resolutions) -> str:
    lines = [f"{'':>8} " + " ".join(f"{r:>6}px" for r in resolutions)]
    for f in frames:
        lines.append(f"{f:>6} f " + " ".join(f"{grid.get((f, r), float('nan')):>8.1f}" for r in resolutions))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
