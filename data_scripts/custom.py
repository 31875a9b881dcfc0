"""Your own videos -> manifest: a folder per class, or a CSV / JSON list of (path, label[, start, end][, split]).

    python data_scripts/custom.py --folder my_videos/ --test-fraction 0.2 --output manifests/mine
    python data_scripts/custom.py --list clips.csv --output manifests/mine

Folder layout: my_videos/<class name>/<any name>.<mp4|avi|webm|mkv|mov|mpg|ts|3gp|...> (common.VIDEO_EXTENSIONS). List files: CSV with a header
(path,label[,start,end,split]) or a JSON list of such objects; paths relative to the list file; start/end in
seconds; split defaults to train (or is drawn with --test-fraction). Labels are class names (surrounding spaces
removed), indexed in sorted order. A row with an empty path or label, a non-numeric start/end, or an end not after
its start is an error that names the row.
"""

import csv
import json
import random
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


def build(entries: list[dict], output, test_fraction: float = 0.0, seed: int = 0, skip_missing=True):
    names = sorted({str(e["label"]) for e in entries})
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {}
    for entry in entries:
        split = entry.get("split") or ("test" if rng.random() < test_fraction else "train")
        splits.setdefault(split, []).append(
            row(entry["path"], names.index(str(entry["label"])), str(entry["label"]), entry.get("start"),
                entry.get("end"), "seconds"))
    return save_manifest(splits, names, output, skip_missing)


def main(argv):
    parser = base_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="one subfolder of videos per class")
    source.add_argument("--list", type=Path, help="a CSV or JSON list of path,label[,start,end,split]")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="random share held out as 'test'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    entries = entries_from_folder(args.folder) if args.folder else entries_from_list(args.list)
    build(entries, args.output, args.test_fraction, args.seed, not args.keep_missing)


if __name__ == "__main__":
    run(main)
