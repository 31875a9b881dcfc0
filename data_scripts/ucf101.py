"""UCF-101 -> manifest.

    python data_scripts/ucf101.py --videos UCF-101/ --lists ucfTrainTestlist/ --split 1 --output manifests/ucf101_s1

classInd.txt: "1 ApplyEyeMakeup" (1-based); trainlist0N.txt: "Class/v_x.avi 1"; testlist0N.txt: "Class/v_x.avi".
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import base_parser, read_lines, row, run, save_manifest


def build(videos: Path, lists: Path, split: int, output, skip_missing=True):
    classes = {}
    for line in read_lines(lists / "classInd.txt"):
        index, name = line.split(maxsplit=1)
        classes[name] = int(index) - 1
    names = [name for name, _ in sorted(classes.items(), key=lambda item: item[1])]
    splits = {}
    for subset, filename in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        rows = []
        for line in read_lines(lists / filename):
            relative = line.split()[0]
            name = relative.split("/")[0]
            if name not in classes:
                raise ValueError(f"{filename}: class {name!r} is not in classInd.txt")
            rows.append(row(videos / relative, classes[name], name))
        splits[subset] = rows
    return save_manifest(splits, names, output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    parser.add_argument("--videos", type=Path, required=True, help="the UCF-101 folder (one subfolder per class)")
    parser.add_argument("--lists", type=Path, required=True, help="the ucfTrainTestlist folder")
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1)
    args = parser.parse_args(argv)
    build(args.videos, args.lists, args.split, args.output, not args.keep_missing)


if __name__ == "__main__":
    run(main)
