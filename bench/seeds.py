"""The main job's headline over several seeds: each seed renders its own clips (the data seed is the training seed)
and trains both models; every table is printed, then the mean and range over the seeds, cell by cell.

    python bench/seeds.py                        # seeds 0, 1, 2 (about 7 minutes each on 2 cores)
    python bench/seeds.py --seeds 3 4 --out runs/seeds -- --num_train_epochs 8
                                                 # flags after -- go to recipes/train.py

Writes seeds.json (every grid) and seeds.md (the tables) under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from main_job import grids, run_main_job

FLEXIBLE_FLOOR = 90.0  # the headline's promise: every cell of the flexible grid (CI checks the default seed)


def summary_table(name: str, per_seed: list[list[dict]]) -> str:
    """Mean (min-max) of top-1 per cell over the seeds, rows frames, columns resolution."""
    cells = {}
    for rows in per_seed:
        for row in rows:
            cells.setdefault((row["frames"], row["resolution"]), []).append(row["top1"])
    frames = sorted({f for f, _ in cells})
    resolutions = sorted({r for _, r in cells})
    text = {key: f"{statistics.mean(v):5.1f} ({min(v):5.1f}-{max(v):5.1f})" for key, v in cells.items()}
    width = max(len(value) for value in text.values())
    lines = [f"{name}: mean (min-max) over {len(per_seed)} seeds",
             "    top1 | " + " | ".join(f"{f'{r}px':>{width}}" for r in resolutions)]
    for f in frames:
        lines.append(f"{f:>6} f | " + " | ".join(f"{text[f, r]:>{width}}" for r in resolutions))
    means = [statistics.mean(row["top1"] for row in rows) for rows in per_seed]
    lines.append(f"grid mean per seed: {', '.join(f'{m:.1f}' for m in means)} (mean {statistics.mean(means):.1f})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, kept)")
    parser.add_argument("train_flags", nargs="*", help="after --: flags for recipes/train.py")
    args = parser.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="stretchysnake-seeds-"))
    results, report = {}, []
    for seed in args.seeds:
        run = run_main_job(work / f"seed{seed}", work / f"data_seed{seed}", ["--seed", str(seed), *args.train_flags])
        results[seed] = {"seconds": round(run["seconds"], 1), **grids(work / f"seed{seed}")}
        worst = min(row["top1"] for row in results[seed]["flexible"])
        report.append(f"seed {seed} ({run['seconds'] / 60:.1f} min), flexible worst cell {worst:.1f}%:\n"
                      f"{run['tables']}")
        print(report[-1] + "\n", flush=True)
    for name in ("flexible", "fixed"):
        if all(name in result for result in results.values()):
            report.append(summary_table(name, [result[name] for result in results.values()]))
    below = {seed: [f"{row['frames']}x{row['resolution']}" for row in result["flexible"]
                    if row["top1"] < FLEXIBLE_FLOOR] for seed, result in results.items()}
    report.append("every flexible cell >= {:.0f}% for every seed: {}".format(
        FLEXIBLE_FLOOR, "yes" if not any(below.values()) else f"no, below: { {s: c for s, c in below.items() if c} }"))
    (work / "seeds.json").write_text(json.dumps({"train_flags": args.train_flags, "runs": results}, indent=2))
    (work / "seeds.md").write_text("\n\n".join(report) + "\n")
    print("\n\n".join(report[len(args.seeds):]))
    print(f"\n{work / 'seeds.md'}")


if __name__ == "__main__":
    main()
