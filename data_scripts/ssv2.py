"""Something-Something V2 -> manifest.

    python data_scripts/ssv2.py --videos 20bn-something-something-v2/ --labels labels/ --output manifests/ssv2

labels/something-something-v2-labels.json maps a template (without brackets) to an index string;
-train.json / -validation.json entries are {id, label, template, placeholders}; -test.json entries {id}
(no label: written with label -1 only if --with-test). Videos are <id>.webm. The class is the template with
'[' and ']' removed.
"""

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import base_parser, row, run, save_manifest


def class_of(entry: dict) -> str:
    return entry["template"].replace("[", "").replace("]", "")


def build(videos: Path, labels: Path, output, skip_missing=True):
    index_of = {name: int(index) for name, index in json.loads((labels / "something-something-v2-labels.json").read_text()).items()}
    names = [name for name, _ in sorted(index_of.items(), key=lambda item: item[1])]
    splits = {}
    for subset, filename in (("train", "something-something-v2-train.json"), ("validation", "something-something-v2-validation.json")):
        entries = json.loads((labels / filename).read_text())
        splits[subset] = [row(videos / f"{e['id']}.webm", index_of[class_of(e)], class_of(e)) for e in entries]
    return save_manifest(splits, names, output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    parser.add_argument("--videos", type=Path, required=True, help="folder of <id>.webm files")
    parser.add_argument("--labels", type=Path, required=True, help="folder with the something-something-v2-*.json files")
    args = parser.parse_args(argv)
    build(args.videos, args.labels, args.output, not args.keep_missing)


if __name__ == "__main__":
    run(main)
