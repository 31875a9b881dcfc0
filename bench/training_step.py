"""Training-step time, round-robin in one process: StretchySnake (fused mixer), StretchySnake with the old unfused
mixer, and transformers' VideoMAE of equal width, depth and tokens.

    python bench/training_step.py                     # 8 x 56 (patch 14), 8 x 112, 8 x 224; width 96, depth 4
    python bench/training_step.py --threads 1 2 --scales 8x56 --repeats 9
    python bench/training_step.py --busy --scales 8x56      # another process keeps one core busy meanwhile

One training step = forward, cross-entropy on a 5-class head, backward, AdamW step, batch --batch (8). 56 px uses
the main job's model (patch 14, a 4 x 4 grid, CLS at both ends); other sizes patch 16. Models are timed in turn
(a step of each, then the next round), so load on the machine hits them alike; at one thread the figure is CPU
time (``time.process_time``), the steadiest on a shared machine, else (and with --busy) wall time. Medians, and
ratios to VideoMAE; and how much of the fused model's step its numba kernels take (each call timed, as
bench/kernel_floor.py does), with the ratio its step would have if they cost nothing: how far kernel work alone can
take it. GOMP_SPINCOUNT is 10000 unless set, as in recipes/train.py (with libgomp's default spin, torch's
idle OpenMP worker holds the second core while the numba kernels' helper thread waits for it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as recipes/train.py: torch's idle OpenMP threads stop spinning

import torch  # noqa: E402

from kernel_floor import KernelTimer  # noqa: E402
from scaling import UNFUSED, build, train_patch, videomae_positions  # noqa: E402

MODELS = ("stretchysnake", UNFUSED, "videomae")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["8x56", "8x112", "8x224"], help="frames x resolution")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds after one warm-up round (median)")
    parser.add_argument("--busy", action="store_true",
                        help="keep one core busy with another process while timing (a shared machine); wall time")
    args = parser.parse_args(argv)
    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run(args)
    finally:
        if busy is not None:
            busy.kill()


def run(args):
    # compile (or load from numba's cache) the kernels before anything is timed
    from modeling_stretchysnake.selective_scan_fused import numba_kernels

    numba_kernels()
    print(f"torch {torch.__version__}; width {args.width}, depth {args.depth}, batch {args.batch}; "
          f"median of {args.repeats} round-robin steps after a warm-up; ms per training step", flush=True)
    print(f"{'threads':>7} {'scale':>7} " + " ".join(f"{m:>22}" for m in MODELS) + "   ratios to videomae")
    for threads in args.threads:
        torch.set_num_threads(threads)
        clock = time.process_time if threads == 1 and not args.busy else time.perf_counter
        for scale in args.scales:
            frames, resolution = map(int, scale.split("x"))
            patch = train_patch(resolution)
            steps = {}
            for name in MODELS:
                torch.manual_seed(0)
                model = build(name, width=args.width, depth=args.depth, classifier=True, patch=patch).train()
                if name == "videomae":
                    videomae_positions(model, frames, resolution, patch)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                steps[name] = (model, optimizer)
            pixel_values = torch.randn(args.batch, frames, 3, resolution, resolution)
            labels = torch.arange(args.batch) % 5
            times = {name: [] for name in MODELS}
            kernel_times = []  # the fused model's numba kernels, per step
            for round_index in range(args.repeats + 1):
                for name, (model, optimizer) in steps.items():
                    timer = KernelTimer(clock)
                    with timer if name == "stretchysnake" else contextlib.nullcontext():
                        start = clock()
                        model(pixel_values, labels=labels).loss.backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        elapsed = clock() - start
                    if round_index:
                        times[name].append(elapsed)
                        if name == "stretchysnake":
                            kernel_times.append(sum(map(sum, timer.times.values())))
            medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
            kernels = statistics.median(kernel_times) * 1e3
            ratios = ", ".join(f"{name} {medians[name] / medians['videomae']:.2f}" for name in MODELS[:2])
            without = (medians["stretchysnake"] - kernels) / medians["videomae"]
            print(f"{threads:>7} {scale:>7} " + " ".join(f"{medians[m]:>22.1f}" for m in MODELS) + f"   {ratios}; "
                  f"its numba kernels {kernels:.1f} ms a step ({kernels / medians['stretchysnake']:.0%}), fused "
                  f"without them {without:.2f}", flush=True)


if __name__ == "__main__":
    main()
