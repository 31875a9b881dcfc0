"""Your own videos -> manifest: a folder per class, or a CSV / JSON list of (path, label[, start, end][, split]).

    python data_scripts/custom.py --folder my_videos/ --test-fraction 0.2 --output manifests/mine
    python data_scripts/custom.py --list clips.csv --output manifests/mine

Folder layout: my_videos/<class name>/<any name>.<mp4|avi|webm|mkv|mov|mpg|ts|3gp|...> (common.VIDEO_EXTENSIONS).
List files: CSV with a header (path,label[,start,end,split]) or a JSON list of such objects; paths relative to the
list file; start/end in seconds. The split defaults to train, or is drawn per class with --test-fraction /
--val-fraction (stratified, the same for the same --seed; --group-by keeps clips of one source video together),
and the count of clips per class and split is printed. Labels are class names (surrounding spaces removed),
indexed in sorted order. A row with an empty path or label, a non-numeric start/end, or an end not after its start
is an error that names the file and row (one line, exit status 1; --debug for the traceback).
"""

import csv
import json
import random
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_scripts.common import VIDEO_EXTENSIONS, base_parser, row, run, save_manifest


def entries_from_folder(folder: Path) -> list[dict]:
    return [{"path": str(video), "label": class_dir.name}
            for class_dir in sorted(p for p in folder.iterdir() if p.is_dir())
            for video in sorted(class_dir.rglob("*")) if video.suffix.lower() in VIDEO_EXTENSIONS]


def entries_from_list(path: Path) -> list[dict]:
    is_json = path.suffix.lower() == ".json"
    if is_json:
        raw = json.loads(path.read_text())
    else:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            raw = list(csv.DictReader(handle))
    entries = []
    for number, entry in enumerate(raw, start=1 if is_json else 2):  # CSV rows counted as in a spreadsheet
        entry = clean_entry(entry, f"{path}, {'entry' if is_json else 'row'} {number}")
        if not Path(entry["path"]).is_absolute():
            entry["path"] = str((path.parent / entry["path"]).resolve())
        entries.append(entry)
    return entries


def clean_entry(entry: dict, where: str) -> dict:
    """Strip the text fields, parse start/end as seconds, and raise a ValueError naming `where` if a row is bad."""
    entry = {key.strip() if isinstance(key, str) else key: value.strip() if isinstance(value, str) else value
             for key, value in entry.items()}
    for key in ("path", "label"):
        if entry.get(key) in (None, ""):
            raise ValueError(f"{where}: '{key}' is missing or empty in {entry}")
    for key in ("start", "end"):
        value = entry.get(key)
        if value in (None, ""):
            entry[key] = None
            continue
        try:
            entry[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {key}={value!r} is not a number of seconds") from None
    if entry["start"] is not None and entry["end"] is not None and entry["end"] <= entry["start"]:
        raise ValueError(f"{where}: end={entry['end']} must be after start={entry['start']}")
    return entry


def group_key(entry: dict, group_by: str | None) -> str:
    """The source a clip comes from: a list column named `group_by`, else the first group (or the whole match) of
    `group_by` as a regular expression on the file name, else the clip itself."""
    if not group_by:
        return entry["path"]
    if group_by in entry:
        return str(entry[group_by])
    match = re.search(group_by, Path(entry["path"]).name)
    if match is None:
        return entry["path"]
    return match.group(1) if match.groups() else match.group(0)


def assign_splits(entries: list[dict], test_fraction: float, val_fraction: float = 0.0, seed: int = 0,
                  group_by: str | None = None) -> list[str]:
    """The split of each entry: its own `split` if it has one, else drawn per class (stratified) in the given
    proportions, whole groups at a time (clips of one source never straddle two splits; a source whose clips have
    several classes counts for the class of its first clip). A class with at least two groups gets at least one in
    test, with three at least one in validation too, and always keeps one for training. Reproducible from
    `seed`."""
    splits = [entry.get("split") or None for entry in entries]
    members_of: dict[str, list[int]] = {}  # group -> entry indices, across classes
    for index, entry in enumerate(entries):
        if splits[index] is None:
            members_of.setdefault(group_key(entry, group_by), []).append(index)
    groups: dict[str, dict[str, list[int]]] = {}  # class (of the group's first clip) -> group -> entry indices
    for key, indices in members_of.items():
        groups.setdefault(str(entries[indices[0]]["label"]), {})[key] = indices
    rng = random.Random(seed)
    for label in sorted(groups):
        members = [groups[label][key] for key in sorted(groups[label])]
        rng.shuffle(members)
        clips = sum(len(group) for group in members)
        held_out = []  # (split, fraction), test first
        for name, fraction in (("test", test_fraction), ("val", val_fraction)):
            if fraction > 0:
                held_out.append((name, fraction))
        position = 0
        for order, (name, fraction) in enumerate(held_out):
            target = fraction * clips
            taken = 0
            # at least one group where that still leaves one for training (and one for each later held-out split)
            minimum = 1 if len(members) - position > 1 + (len(held_out) - order - 1) else 0
            while position < len(members) - 1 and (taken < minimum or taken + len(members[position]) / 2 <= target):
                for index in members[position]:
                    splits[index] = name
                taken += len(members[position])
                position += 1
        for group in members[position:]:
            for index in group:
                splits[index] = "train"
    return splits


def build(entries: list[dict], output, test_fraction: float = 0.0, seed: int = 0, skip_missing=True,
          val_fraction: float = 0.0, group_by: str | None = None):
    names = sorted({str(e["label"]) for e in entries})
    assigned = assign_splits(entries, test_fraction, val_fraction, seed, group_by)
    splits: dict[str, list[dict]] = {}
    for entry, split in zip(entries, assigned):
        timed = entry.get("start") is not None or entry.get("end") is not None
        splits.setdefault(split, []).append(
            row(entry["path"], names.index(str(entry["label"])), str(entry["label"]), entry.get("start"),
                entry.get("end"), "seconds" if timed else "frames"))
    print_split_counts(splits, names)
    return save_manifest(splits, names, output, skip_missing)


def print_split_counts(splits: dict[str, list[dict]], names: list[str]) -> None:
    usual = ("train", "val", "test")
    order = [name for name in usual if name in splits] + sorted(set(splits) - set(usual))
    width = max(len(name) for name in names + ["class"])
    print(f"{'class':<{width}}  " + "  ".join(f"{split:>6}" for split in order))
    for index, name in enumerate(names):
        counts = [sum(item["label"] == index for item in splits[split]) for split in order]
        print(f"{name:<{width}}  " + "  ".join(f"{count:>6}" for count in counts))


def main(argv):
    parser = base_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="one subfolder of videos per class")
    source.add_argument("--list", type=Path, help="a CSV or JSON list of path,label[,start,end,split]")
    parser.add_argument("--test-fraction", type=float, default=0.0,
                        help="share of each class held out as 'test' (stratified; rows with a split keep it)")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of each class held out as 'val'")
    parser.add_argument("--group-by", help="keep clips of one source in one split: a list column, or a regular "
                                           "expression on the file name whose first group names the source "
                                           "(e.g. '_g(\\d+)_' for UCF-101's v_Class_g08_c01.avi)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split draw")
    args = parser.parse_args(argv)
    for name in ("test_fraction", "val_fraction"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if args.test_fraction + args.val_fraction >= 1:
        parser.error("--test-fraction plus --val-fraction must leave a share for training")
    entries = entries_from_folder(args.folder) if args.folder else entries_from_list(args.list)
    if not entries:
        raise ValueError(f"no videos found in {args.folder or args.list}")
    build(entries, args.output, args.test_fraction, args.seed, not args.keep_missing, args.val_fraction,
          args.group_by)


if __name__ == "__main__":
    run(main)
