"""COIN (task classification, 180 tasks) -> manifest.

    python data_scripts/coin.py --annotations COIN.json --videos coin_videos/ --output manifests/coin

COIN.json: {"database": {youtube_id: {class, recipe_type, subset: training|testing, start, end, annotation}}}.
The label is the task (`recipe_type`, named by `class`); start/end (seconds) bound the task in the video.
Videos are <videos>/<youtube_id>.<mp4|webm|mkv|...>.
"""

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import base_parser, row, run, save_manifest

SUBSETS = {"training": "train", "testing": "test"}


def build(annotations: Path, videos: Path, output, skip_missing=True):
    database = json.loads(Path(annotations).read_text())["database"]
    task_names = {}
    for entry in database.values():
        task_names.setdefault(int(entry["recipe_type"]), entry["class"])
    if sorted(task_names) != list(range(len(task_names))):
        raise ValueError("recipe_type ids are expected to be 0..K-1")
    names = [task_names[i] for i in range(len(task_names))]
    splits = {"train": [], "test": []}
    for youtube_id, entry in database.items():
        subset = SUBSETS.get(entry["subset"])
        if subset is None:
            continue
        splits[subset].append(row(videos / f"{youtube_id}.mp4", entry["recipe_type"], entry["class"],
                                  entry.get("start"), entry.get("end"), "seconds"))
    return save_manifest(splits, names, output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    parser.add_argument("--annotations", type=Path, required=True, help="COIN.json")
    parser.add_argument("--videos", type=Path, required=True, help="folder of <youtube_id>.<ext> files")
    args = parser.parse_args(argv)
    build(args.annotations, args.videos, args.output, not args.keep_missing)


if __name__ == "__main__":
    run(main)
