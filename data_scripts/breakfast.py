"""Breakfast Actions (10 activities) -> manifest.

    python data_scripts/breakfast.py --root BreakfastII_15fps_qvga_sync/ --protocol long --output manifests/breakfast
    python data_scripts/breakfast.py --root ... --protocol s1 --output manifests/breakfast_s1

Videos are Pxx/<camera>/Pxx_<activity>[_ch0|_ch1].avi. Protocols: s1..s4, the official person splits (test
persons s1 P03-P15, s2 P16-P28, s3 P29-P41, s4 P42-P54; train on the rest), and `long`, the long-video
protocol used by VideoMamba (train P03-P46, test P47-P54).
"""

import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import VIDEO_EXTENSIONS, base_parser, row, run, save_manifest

ACTIVITIES = ("cereals", "coffee", "friedegg", "juice", "milk", "pancake", "salat", "sandwich", "scrambledegg", "tea")
TEST_PERSONS = {"s1": range(3, 16), "s2": range(16, 29), "s3": range(29, 42), "s4": range(42, 55), "long": range(47, 55)}
PERSONS = range(3, 55)
_NAME = re.compile(r"^P(\d+)_(.+?)(?:_ch\d)?$")


def build(root: Path, protocol: str, output, skip_missing=True):
    test = set(TEST_PERSONS[protocol])
    splits = {"train": [], "test": []}
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS):
        match = _NAME.match(path.stem)
        if not match or match.group(2) not in ACTIVITIES:
            continue
        person = int(match.group(1))
        if person not in PERSONS:
            continue
        activity = match.group(2)
        splits["test" if person in test else "train"].append(row(path, ACTIVITIES.index(activity), activity))
    return save_manifest(splits, list(ACTIVITIES), output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    parser.add_argument("--root", type=Path, required=True, help="folder holding P03/ ... P54/")
    parser.add_argument("--protocol", choices=sorted(TEST_PERSONS), default="long")
    args = parser.parse_args(argv)
    build(args.root, args.protocol, args.output, not args.keep_missing)


if __name__ == "__main__":
    run(main)
