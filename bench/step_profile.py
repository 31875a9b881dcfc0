"""Where the main job's training step goes: wall-clock timers around its parts, in the recipe's own process.

    python bench/step_profile.py                        # the main job's flexible model, its first 400 steps
    python bench/step_profile.py --steps 100 -- --seed 1 --data_root outputs/data_seed1
                                                        # flags after -- go to recipes/train.py

Runs recipes/train.py (the fixed-scale baseline off, stopped after --steps steps) with timers wrapped around the
Trainer's parts: the clips for a step (``get_batch_samples``: decode, augment, collate), forward and loss, backward,
the optimizer step, and inside them the fused mixer op (forward, backward) and every numba kernel call. Prints ms per
step of each. A profiler (cProfile) inflates the Python side several-fold; the timers cost a few microseconds a call.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # before torch, as recipes/train.py sets it (see docs/kernels.md)
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "recipes")]

import portable_numerics  # noqa: E402

# the recipe's CPU numerics for its flags (after --), set before torch is imported as the recipe does
portable_numerics.apply_before_torch(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else [])

import accelerate  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import train as recipe  # noqa: E402
from modeling_stretchysnake import bidirectional_mixer  # noqa: E402
from modeling_stretchysnake import selective_scan_numba  # noqa: E402
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer  # noqa: E402


class StepTimers:
    """Seconds and calls per named part, counted only while ``Trainer.train`` runs (not the grid evaluation)."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.Counter()
        self.training = False

    def wrap(self, owner, attribute: str, name: str) -> None:
        function = getattr(owner, attribute)

        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.training:
                    self.seconds[name] += time.perf_counter() - start
                    self.calls[name] += 1

        setattr(owner, attribute, timed)

    def wrap_train(self) -> None:
        train = transformers.Trainer.train

        @functools.wraps(train)
        def timed_train(trainer, *args, **kwargs):
            self.training = True
            start = time.perf_counter()
            try:
                return train(trainer, *args, **kwargs)
            finally:
                self.seconds["Trainer.train, whole (the first steps' warm-up included)"] += time.perf_counter() - start
                self.training = False

        transformers.Trainer.train = timed_train

    def report(self, steps: int) -> str:
        lines = [f"ms per training step, {steps} steps:", "| part | ms per step | calls |", "|---|---|---|"]
        for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]):
            lines.append(f"| {name} | {1000 * seconds / steps:.1f} | {self.calls[name] or ''} |")
        return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--output_dir", default="outputs/step_profile")
    parser.add_argument("train_flags", nargs="*", help="after --: flags for recipes/train.py")
    args = parser.parse_args(argv)

    timers = StepTimers()
    timers.wrap_train()
    for owner, attribute, name in (
        (StretchySnakeTrainer, "get_batch_samples", "clips for the step (get_batch_samples: decode, augment, collate)"),
        (StretchySnakeTrainer, "compute_loss", "forward and loss (compute_loss)"),
        (accelerate.Accelerator, "backward", "backward (accelerator.backward)"),
        (torch.optim.AdamW, "step", "optimizer step (AdamW)"),
        (bidirectional_mixer, "_forward", "of the forward: the mixer ops (all blocks)"),
        (bidirectional_mixer, "_backward_impl", "of the backward: the mixer ops (all blocks)"),
        (selective_scan_numba, "_run_tasks", "of the mixer ops: the numba kernels (every call)"),
    ):
        timers.wrap(owner, attribute, name)
    recipe.main(["--output_dir", args.output_dir, "--baseline", "none", "--max_steps", str(args.steps),
                 *args.train_flags])
    print("\n" + timers.report(args.steps))


if __name__ == "__main__":
    main()
