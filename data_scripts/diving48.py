"""Diving-48 (V2 annotations) -> manifest.

    python data_scripts/diving48.py --root Diving48/ --output manifests/diving48

Diving48_V2_train.json / Diving48_V2_test.json entries: {vid_name, label, start_frame, end_frame};
Diving48_vocab.json: one list of sub-labels (takeoff, somersaults, twists, flight) per class;
videos rgb/<vid_name>.mp4. Each clip keeps its [start_frame, end_frame] segment.
"""

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import base_parser, row, run, save_manifest


def build(root: Path, output, skip_missing=True):
    vocab = json.loads((root / "Diving48_vocab.json").read_text())
    names = ["_".join(parts) if isinstance(parts, list) else str(parts) for parts in vocab]
    splits = {}
    for subset in ("train", "test"):
        entries = json.loads((root / f"Diving48_V2_{subset}.json").read_text())
        splits[subset] = [
            # end_frame is inclusive in the annotations; manifests use an exclusive end
            row(root / "rgb" / f"{e['vid_name']}.mp4", e["label"], names[e["label"]], e.get("start_frame"),
                None if e.get("end_frame") is None else e["end_frame"] + 1, "frames")
            for e in entries
        ]
    return save_manifest(splits, names, output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    parser.add_argument("--root", type=Path, required=True, help="folder with the json files and rgb/")
    args = parser.parse_args(argv)
    build(args.root, args.output, not args.keep_missing)


if __name__ == "__main__":
    run(main)
