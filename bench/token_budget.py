"""Token-budget batching against a fixed batch, on the same wall-clock budget: accuracy over the scale grid and
clips per second.

    python bench/token_budget.py                          # 3 runs, 150 s of training each
    python bench/token_budget.py --seconds 60 --runs fixed_batch tokens_mean

The main job's flexible training (static tokens, frames {4, 8} x {56, 84, 112} px, the main job's model and
generated data), run by recipes/train.py in one subprocess per run:
- fixed_batch: 8 clips every step (the default);
- tokens_mean: --tokens_per_device_batch 1024 (16 clips of 4 frames, 8 of 8 frames: the same tokens every step),
  loss averaged over each step's clips, the same learning rate for every step;
- tokens_scaled: the same batches, each step's loss scaled by its clips / the expected clips per step.
Each run is first timed for --probe_steps and for twice as many steps; the difference gives its seconds per step
without the start-up (data loading, first-call compilation), and its step count for the budget is budget /
seconds per step, so every run trains for about the same wall time (the cosine schedule ends with it). Prints each run's
grid, grid mean, clips/s and wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from flexibility import clean_env, grid_mean, grid_table

ROOT = Path(__file__).resolve().parents[1]
TOKENS = ["--tokens_per_device_batch", "1024", "--max_per_device_batch", "16"]
RUNS = {
    "fixed_batch": [],
    "tokens_mean": [*TOKENS, "--token_batch_loss", "mean"],
    "tokens_scaled": [*TOKENS, "--token_batch_loss", "scaled"],
}


def train(name: str, steps: int, args, out: Path, evaluate: bool) -> tuple[dict, float, str]:
    """Run the recipe; returns (grid, train seconds, log text)."""
    run_dir = out / (name if evaluate else f"{name}_probe{steps}")
    command = [sys.executable, str(ROOT / "recipes" / "train.py"), *RUNS[name], "--max_steps", str(steps),
               "--output_dir", str(run_dir), "--baseline", "none", "--seed", str(args.seed),
               "--data_root", args.data_root, "--logging_steps", "1",
               "--generated_train_per_class", str(args.train_per_class),
               "--generated_eval_per_class", str(args.eval_per_class),
               "--eval_frames", *(map(str, args.eval_frames) if evaluate else ["4"]),
               "--eval_resolutions", *(map(str, args.eval_resolutions) if evaluate else ["56"])]
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "train.log"
    with log.open("w") as handle:
        completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                   env={"PYTHONPATH": str(ROOT), **clean_env()})
    text = log.read_text()
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed:\n{text[-3000:]}")
    seconds = float(re.findall(r"'train_runtime': '?([0-9.]+)", text)[-1])
    grid = {}
    if evaluate:
        rows = json.loads((run_dir / "scale_grid.json").read_text())
        grid = {(r["frames"], r["resolution"]): r["top1"] for r in rows}
    return grid, seconds, text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seconds", type=float, default=150, help="training wall-clock budget of every run")
    parser.add_argument("--probe_steps", type=int, default=40)
    parser.add_argument("--eval_frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--eval_resolutions", type=int, nargs="+", default=[56, 84, 112, 168])
    parser.add_argument("--data_root", default="outputs/generated_actions", help="the main job's data by default")
    parser.add_argument("--train_per_class", type=int, default=300)
    parser.add_argument("--eval_per_class", type=int, default=20)
    parser.add_argument("--output_dir", default="outputs/bench_token_budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    rows = {}
    for name in args.runs:
        short = train(name, args.probe_steps, args, out, evaluate=False)[1]
        long = train(name, 2 * args.probe_steps, args, out, evaluate=False)[1]
        # a step's marginal time; the difference of two timings can come out near 0 on a loaded machine, so it is
        # floored at a quarter of the longer probe's mean step (which counts start-up too)
        per_step = max((long - short) / args.probe_steps, long / (2 * args.probe_steps) / 4)
        steps = max(1, round(args.seconds / per_step))
        print(f"{name}: {per_step * 1000:.0f} ms a step in the probes -> {steps} steps", flush=True)
        start = time.perf_counter()
        grid, seconds, log = train(name, steps, args, out, evaluate=True)
        clips = sum(int(c) for c in re.findall(r"'clips': ([0-9]+)", log))  # every step is logged
        logged = len(re.findall(r"'clips': ([0-9]+)", log))
        mean_clips = clips / max(logged, 1)
        rows[name] = {"grid": grid, "steps": steps, "train_seconds": seconds, "clips_per_step": mean_clips,
                      "clips_per_second": steps * mean_clips / seconds, "wall": time.perf_counter() - start}
        print(f"{name}: grid mean {grid_mean(grid):.1f}, {rows[name]['clips_per_second']:.1f} clips/s", flush=True)
    (out / "summary.json").write_text(json.dumps(
        {n: {**r, "grid": {f"{f}x{res}": v for (f, res), v in r["grid"].items()}} for n, r in rows.items()}, indent=2))
    print(f"\nsame training budget ({args.seconds:.0f} s each), seed {args.seed}; top-1 (%)")
    for name, row in rows.items():
        print(f"\n{name}\n{grid_table(row['grid'], args.eval_frames, args.eval_resolutions)}")
    print(f"\n{'run':<14} {'steps':>6} {'clips/step':>10} {'clips/s':>8} {'train s':>8} {'grid mean':>10} {'worst':>6}")
    for name, row in rows.items():
        print(f"{name:<14} {row['steps']:>6} {row['clips_per_step']:>10.1f} {row['clips_per_second']:>8.1f} "
              f"{row['train_seconds']:>8.0f} {grid_mean(row['grid']):>10.1f} {min(row['grid'].values()):>6.1f}")


if __name__ == "__main__":
    main()
