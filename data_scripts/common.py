"""What every dataset script shares: reading annotation files, resolving video paths, saving the manifest.

A manifest is a `datasets.DatasetDict` saved to disk; each split has the columns
video (path), label (ClassLabel), label_name, start / end (None for the whole video) and time_unit.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterable

logger = logging.getLogger("stretchysnake.data_scripts")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp",
                    ".flv", ".wmv", ".ogv", ".vob")


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines; CRLF (UCF-101's lists) and a UTF-8 BOM are handled."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_video(path: Path) -> Path | None:
    """The file itself, else a case-insensitive match in its folder, else the same stem with a video extension."""
    if path.exists():
        return path
    folder = path.parent
    if not folder.is_dir():
        return None
    lowered = {child.name.lower(): child for child in folder.iterdir()}
    if path.name.lower() in lowered:
        return lowered[path.name.lower()]
    for extension in VIDEO_EXTENSIONS:
        match = lowered.get(path.stem.lower() + extension)
        if match is not None:
            return match
    return None


def row(video: Path | str, label: int, label_name: str, start=None, end=None, time_unit: str = "frames") -> dict:
    return {"video": str(video), "label": int(label), "label_name": label_name,
            "start": None if start is None else float(start), "end": None if end is None else float(end),
            "time_unit": time_unit}


def resolve_rows(rows: Iterable[dict], skip_missing: bool = True) -> list[dict]:
    """Point each row at the file on disk; rows whose video is missing are dropped (and counted) or kept."""
    kept, missing = [], []
    for item in rows:
        found = find_video(Path(item["video"]))
        if found is None:
            missing.append(item["video"])
            if skip_missing:
                continue
        else:
            item = {**item, "video": str(found)}
        kept.append(item)
    if missing:
        logger.warning("%d annotated videos not found%s, e.g. %s", len(missing), " (dropped)" if skip_missing else "",
                       missing[:3])
    return kept


def save_manifest(splits: dict[str, list[dict]], label_names: list[str], output: str | Path, skip_missing: bool = True):
    """Build and save the DatasetDict; returns it."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"video": Value("string"), "label": ClassLabel(names=list(label_names)),
                         "label_name": Value("string"), "start": Value("float64"), "end": Value("float64"),
                         "time_unit": Value("string")})
    manifest = DatasetDict({
        name: Dataset.from_list(resolve_rows(rows, skip_missing), features=features) for name, rows in splits.items()
    })
    manifest.save_to_disk(str(output))
    summary = ", ".join(f"{name} {len(split)}" for name, split in manifest.items())
    print(f"saved {output}: {len(label_names)} classes; {summary}")
    return manifest


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder to save the manifest (a datasets.DatasetDict) to")
    parser.add_argument("--keep-missing", action="store_true", help="keep rows whose video file is not found")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
    return parser


def run(main) -> None:
    """Run a script's main: bad input is one `error:` line and exit status 1 (`--debug` shows the traceback)."""
    from modeling_stretchysnake.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    run_cli(main)
