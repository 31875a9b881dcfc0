"""HMDB-51 -> manifest.

    python data_scripts/hmdb51.py --videos hmdb51/ --splits testTrainMulti_7030_splits/ --split 1 --output manifests/hmdb51_s1

<class>_test_split{1,2,3}.txt: "<clip>.avi <0|1|2>" (1 train, 2 test, 0 unused); videos <class>/<clip>.avi.
"""

import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import base_parser, read_lines, row, run, save_manifest

SUBSETS = {"1": "train", "2": "test"}


def build(videos: Path, split_dir: Path, split: int, output, skip_missing=True):
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    files = sorted(p for p in split_dir.iterdir() if pattern.match(p.name))
    if not files:
        raise FileNotFoundError(f"no *_test_split{split}.txt files in {split_dir}")
    names = [pattern.match(p.name).group(1) for p in files]
    splits = {"train": [], "test": []}
    for label, (name, path) in enumerate(zip(names, files)):
        for line in read_lines(path):
            clip, flag = line.split()
            if flag in SUBSETS:
                splits[SUBSETS[flag]].append(row(videos / name / clip, label, name))
    return save_manifest(splits, names, output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    parser.add_argument("--videos", type=Path, required=True, help="folder with one subfolder of .avi per class")
    parser.add_argument("--splits", type=Path, required=True, help="the testTrainMulti_7030_splits folder")
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1)
    args = parser.parse_args(argv)
    build(args.videos, args.splits, args.split, args.output, not args.keep_missing)


if __name__ == "__main__":
    run(main)
