"""Does the main job give the same numbers every time? It runs the main job twice with the same command and seed:

    A: an empty numba cache (the kernels are compiled in that run), the generated clips rendered in that run, a
       quiet machine;
    B: the numba cache A left (the kernels are loaded), A's clips reused, and (unless --quiet) another process
       keeping one core busy the whole time;

then compares every logged training step (loss, gradient norm, learning rate), every weight of both saved models
(flexible and fixed-scale) and both accuracy grids, bit for bit.

    python bench/determinism.py                      # the main job itself (about 15 minutes on 2 cores)
    python bench/determinism.py --out runs/ -- --num_train_epochs 1 --generated_train_per_class 40
                                                     # flags after -- go to recipes/train.py (a shorter check)

It prints one line per compared thing and a verdict, and writes determinism.json under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from main_job import run_main_job
from safetensors.numpy import load_file


def model_folders(output: Path) -> list[Path]:
    return sorted(path.parent for path in output.rglob("final/model.safetensors"))


def without_timings(entry: dict) -> dict:
    """A logged entry without what measures time (the summary's train_runtime, samples per second, ...)."""
    return {key: value for key, value in entry.items() if "runtime" not in key and "per_second" not in key}


def compare(first: Path, second: Path) -> dict:
    """Bit-for-bit comparison of two runs' logged steps, weights and grids."""
    logs = [{name: [without_timings(entry) for entry in history] for name, history in
             json.loads((run / "training_log.json").read_text()).items()} for run in (first, second)]
    steps = {name: (len(history), sum(a == b for a, b in zip(history, logs[1].get(name, []))))
             for name, history in logs[0].items()}
    weights = {}
    for folder in model_folders(first):
        relative = folder.relative_to(first)
        tensors = [load_file(run / relative / "model.safetensors") for run in (first, second)]
        differ = [key for key, value in tensors[0].items() if value.tobytes() != tensors[1][key].tobytes()]
        worst = max((float(abs(tensors[0][key].astype("float64") - tensors[1][key]).max()) for key in differ),
                    default=0.0)
        weights[str(relative)] = {"tensors": len(tensors[0]), "differ": len(differ), "max_abs_difference": worst}
    grids = {str(path.relative_to(first)): path.read_bytes() == (second / path.relative_to(first)).read_bytes()
             for path in sorted(first.rglob("scale_grid.json"))}
    return {"logged_steps": steps, "weights": weights, "grids_identical": grids}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one, kept)")
    parser.add_argument("--quiet", action="store_true", help="run B without the busy process")
    parser.add_argument("train_flags", nargs="*", help="after --: flags for recipes/train.py")
    args = parser.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="stretchysnake-determinism-"))
    work.mkdir(parents=True, exist_ok=True)
    if (work / "numba_cache").exists() or (work / "data").exists():
        sys.exit(f"error: {work} already holds a numba cache or clips; give an empty --out")
    flags = ["--logging_steps", "1", *args.train_flags]
    env = {"NUMBA_CACHE_DIR": str(work / "numba_cache")}
    runs = {name: run_main_job(work / name, work / "data", flags, env=env, busy=busy)
            for name, busy in (("A", False), ("B", not args.quiet))}
    result = compare(work / "A", work / "B")
    identical = (all(total == same for total, same in result["logged_steps"].values())
                 and all(w["differ"] == 0 for w in result["weights"].values()) and all(result["grids_identical"].values()))
    record = {"train_flags": args.train_flags, "busy_in_B": not args.quiet, "identical": identical,
              "seconds": {name: round(run["seconds"], 1) for name, run in runs.items()}, **result,
              "tables": {name: run["tables"] for name, run in runs.items()}}
    (work / "determinism.json").write_text(json.dumps(record, indent=2))
    print(f"A: empty numba cache, clips rendered, quiet ({runs['A']['seconds']:.0f} s)\n"
          f"B: warm numba cache, clips reused, {'quiet' if args.quiet else 'one core kept busy'} "
          f"({runs['B']['seconds']:.0f} s)")
    for name, (total, same) in result["logged_steps"].items():
        print(f"logged entries, {name}: {same} of {total} identical (every step's loss, gradient norm, learning rate)")
    for name, weights in result["weights"].items():
        print(f"weights, {name}: {weights['tensors'] - weights['differ']} of {weights['tensors']} tensors identical"
              f" (largest difference {weights['max_abs_difference']:.3g})")
    for name, same in result["grids_identical"].items():
        print(f"accuracy grid, {name}: {'identical' if same else 'DIFFERENT'}")
    print(f"\nrun A printed:\n{runs['A']['tables']}\n")
    print(f"verdict: {'bit-identical' if identical else 'DIFFERENT'} ({work / 'determinism.json'})")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
