"""Training-step time when several processes share the CPU (a multi-process launch): numba's thread pool sized
by torch's thread count (the package's default) against one thread per core in every process (numba's own default).

    python bench/processes.py                 # 2 processes, 1 torch thread each (what torchrun / accelerate give)
    python bench/processes.py --processes 1 --threads 2

Each process times --steps forward+backward+AdamW steps of the main job's model (96 x 4) on random 8-frame clips
of --grid x --grid tokens (patch 14; 4 is the main job's 56 px), batch 8, after 2 warm-up steps, and reports its
median. All processes of a setting run at once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import statistics, sys, time, torch
from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification
torch.manual_seed(0)
grid = int(sys.argv[2])
config = StretchySnakeConfig(hidden_size=96, num_hidden_layers=4, image_size=14 * grid, patch_size=14, num_frames=8,
                             num_labels=5, cls_position="ends", drop_path_rate=0.0, scale_mode="static_patches")
model = StretchySnakeForVideoClassification(config)
optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
pixels, labels = torch.randn(8, 8, 3, 14 * grid, 14 * grid), torch.randint(0, 5, (8,))
times = []
for step in range(2 + int(sys.argv[1])):
    start = time.perf_counter()
    model(pixels, labels=labels).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    times.append(time.perf_counter() - start)
import numba
print(statistics.median(times[2:]), numba.config.NUMBA_NUM_THREADS, torch.get_num_threads())
"""


def run_setting(processes: int, threads: int, numba_threads: str | None, steps: int,
                grid: int) -> list[tuple[float, int, int]]:
    env = {key: value for key, value in os.environ.items() if key not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    if numba_threads is not None:
        env["NUMBA_NUM_THREADS"] = numba_threads
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(steps), str(grid)], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=1800)
        seconds, pool, torch_threads = out.split()
        results.append((float(seconds), int(pool), int(torch_threads)))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--grid", type=int, default=4, help="token grid side (patch 14): 4 is the main job's")
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    settings = {"pool follows torch (default)": None, f"pool of {cores} (one per core)": str(cores)}
    print(f"{args.processes} process(es) at once, OMP_NUM_THREADS={args.threads}, {cores} cores, 8 frames x "
          f"{14 * args.grid} px ({args.grid} x {args.grid} tokens); median step, s")
    medians = {}
    for name, numba_threads in settings.items():
        results = run_setting(args.processes, args.threads, numba_threads, args.steps, args.grid)
        medians[name] = statistics.median(seconds for seconds, _, _ in results)
        pools = sorted({pool for _, pool, _ in results})
        torch_threads = sorted({t for _, _, t in results})
        print(f"  {name:<32} {medians[name]:7.3f} s/step  (numba pool {pools}, torch threads after the scan "
              f"{torch_threads})")
    first, second = medians.values()
    print(f"one-per-core pool / torch-sized pool: {second / first:.1f}x the step time")


if __name__ == "__main__":
    main()
