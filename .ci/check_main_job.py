"""CI's guard on the main job's headline: the flexible model scores at least 90% top-1 in every cell of the grid,
and the fixed-scale model's mean away from its own scale stays at most 60% (else the method stops showing).

    python .ci/check_main_job.py outputs/stretchysnake-embedded
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FLEXIBLE_FLOOR = 90.0  # every cell of the flexible model's grid
FIXED_OFF_SCALE_CEILING = 60.0  # the fixed-scale model's mean over the cells it was not trained at
FIXED_SCALE = (8, 56)  # the main job's fixed model: 8 frames at 56 px (recipes/train.py --baseline auto)


def main(output_dir: str) -> int:
    output = Path(output_dir)
    flexible = json.loads((output / "scale_grid.json").read_text())
    fixed = json.loads((output / "fixed_scale" / "scale_grid.json").read_text())
    failures = [f"flexible {row['frames']}x{row['resolution']}: {row['top1']:.1f}% < {FLEXIBLE_FLOOR}%"
                for row in flexible if row["top1"] < FLEXIBLE_FLOOR]
    off_scale = [row["top1"] for row in fixed if (row["frames"], row["resolution"]) != FIXED_SCALE]
    off_scale_mean = sum(off_scale) / len(off_scale)
    if off_scale_mean > FIXED_OFF_SCALE_CEILING:
        failures.append(f"fixed {FIXED_SCALE[0]}x{FIXED_SCALE[1]} off its scale: mean {off_scale_mean:.1f}% > "
                        f"{FIXED_OFF_SCALE_CEILING}%")
    worst = min(row["top1"] for row in flexible)
    print(f"main job: flexible worst cell {worst:.1f}% (floor {FLEXIBLE_FLOOR}%), fixed off-scale mean "
          f"{off_scale_mean:.1f}% (ceiling {FIXED_OFF_SCALE_CEILING}%)")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
