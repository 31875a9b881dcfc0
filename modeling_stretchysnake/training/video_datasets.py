"""Where the recipes' videos come from: anything `datasets.load_dataset` takes (a Hub dataset id, a local folder in
the Hub layout with its dataset card, `videofolder` with `--data_dir`, `csv` / `json` / `parquet` with
`--data_files`), or a `DatasetDict` saved to disk (the manifests data_scripts/ writes: a manifest is a dataset).

Every split comes out in the form the training side reads, map-style or streamed:
    video: a path string, or a `datasets.Video(decode=False)` value {"path", "bytes"} (decoded by the package's own
        decoders at the step's scale; bytes from memory)
    label: an int, of a `ClassLabel` whose names become the model's `id2label`
    start / end / time_unit: kept where the dataset has them (a segment of the video)
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    """The data options every recipe takes (train.py, evaluate_model.py, calibrate_cascade.py)."""

    dataset_name: str | None = field(default=None, metadata={
        "help": "anything datasets.load_dataset takes: a Hub dataset id, a local folder (Hub layout: data files and a "
                "dataset card), 'videofolder' (with --data_dir), 'csv' / 'json' / 'parquet' (with --data_files), or a "
                "folder a DatasetDict was saved to"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "the dataset's configuration (subset)"})
    dataset_revision: str | None = field(default=None, metadata={"help": "a branch, tag or commit of a Hub dataset"})
    data_dir: str | None = field(default=None, metadata={"help": "load_dataset's data_dir (e.g. a videofolder tree)"})
    data_files: list[str] | None = field(default=None, metadata={
        "help": "load_dataset's data_files: paths or globs, SPLIT=PATH to name their split (e.g. train=train.csv "
                "test=test.csv)"})
    manifest: str | None = field(default=None, metadata={
        "help": "a DatasetDict saved by data_scripts/ (the same as --dataset_name FOLDER)"})
    video_column_name: str = field(default="video", metadata={
        "help": "the column of videos: paths, a datasets.Video feature, or {path, bytes} values"})
    label_column_name: str = field(default="label", metadata={"help": "the column of labels: ClassLabel, strings or ints"})
    validation_split_fraction: float | None = field(default=None, metadata={
        "help": "where the dataset has no evaluation split: hold out this fraction of the training split (stratified "
                "by label, the same for the same --seed)"})
    streaming: bool = field(default=False, metadata={
        "help": "read the training split as a stream of shards (datasets.IterableDataset), for corpora larger than "
                "the disk; needs --max_steps"})
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "with --streaming: the seeded shuffle buffer, in videos"})

    @property
    def given(self) -> bool:
        return bool(self.dataset_name or self.manifest)

    @property
    def source(self) -> str:
        """How messages name the data."""
        name = self.manifest or self.dataset_name
        if self.dataset_name in ("csv", "json", "parquet", "videofolder", "webdataset") or not name:
            detail = self.data_dir or " ".join(self.data_files or [])
            return f"{name} ({detail})" if detail else str(name)
        return name


class DataError(ValueError):
    """The data cannot serve the run as asked (a missing split or column, an unknown label, an empty split)."""


@dataclass
class VideoSplits:
    """The requested splits in the training side's form, and the class names their labels index."""

    splits: dict[str, Any]
    label_names: list[str]

    def __getitem__(self, name: str):
        return self.splits[name]


def parse_data_files(values: Sequence[str] | None):
    """`--data_files a.csv b.csv` or `--data_files train=a.csv test=b.csv` -> load_dataset's data_files."""
    if not values:
        return None
    if not any("=" in value for value in values):
        return list(values)
    files: dict[str, list[str]] = {}
    for value in values:
        split, separator, path = value.partition("=")
        if not separator or not split or not path:
            raise DataError(f"--data_files: give every file as SPLIT=PATH once one is (got {value!r})")
        files.setdefault(split, []).append(path)
    return files


def _saved_dataset_folder(path: str | None) -> bool:
    """A folder `save_to_disk` wrote (a DatasetDict, or one Dataset)."""
    if not path:
        return False
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def open_dataset(data: DataArguments, streaming: bool = False):
    """The dataset's splits as a dict (a DatasetDict, or an IterableDatasetDict when streaming)."""
    import datasets

    if data.manifest and data.dataset_name:
        raise DataError("give the data once: --manifest FOLDER or --dataset_name NAME_OR_PATH, not both")
    folder = data.manifest or (data.dataset_name if _saved_dataset_folder(data.dataset_name) else None)
    if folder is not None:
        if not Path(folder).exists():
            raise DataError(f"no such dataset folder: {folder}")
        saved = datasets.load_from_disk(folder)
        if isinstance(saved, datasets.Dataset):
            saved = datasets.DatasetDict({str(saved.split or "train"): saved})
        if streaming:  # a saved dataset read as shards too, the same code as a Hub stream's
            return {name: split.to_iterable_dataset(num_shards=max(1, min(len(split), 64)))
                    for name, split in saved.items()}
        return dict(saved)
    try:
        loaded = datasets.load_dataset(
            data.dataset_name, data.dataset_config_name, revision=data.dataset_revision, data_dir=data.data_dir,
            data_files=parse_data_files(data.data_files), streaming=streaming,
        )
    except FileNotFoundError as error:
        raise DataError(f"cannot load {data.source}: {error}") from None
    except ValueError as error:  # datasets refuses a split with no rows while preparing it
        empty = re.match(r'Instruction "(.+)" corresponds to no data', str(error))
        if empty:
            raise DataError(f"{data.source} [{empty.group(1)}] is empty") from None
        raise
    return dict(loaded)


def _columns(split) -> list[str]:
    names = split.column_names
    if names is None:  # a stream whose files declare no schema (JSON lines): its first row's keys
        names = list(next(iter(split)).keys())
    return list(names)


def _resolve_paths(batch: dict, base: str) -> dict:
    """Relative video paths that do not exist from the working directory, taken relative to the data's folder."""
    return {"video": [v if v is None or os.path.isabs(v) or os.path.exists(v) else os.path.join(base, v)
                      for v in batch["video"]]}


def _local_base(data: DataArguments) -> str | None:
    """The folder relative video paths in a CSV / JSON / folder dataset are given from."""
    if data.dataset_name and Path(data.dataset_name).is_dir():
        return str(Path(data.dataset_name).resolve())
    if data.data_dir and Path(data.data_dir).is_dir():
        return str(Path(data.data_dir).resolve())
    files = parse_data_files(data.data_files)
    paths = [p for group in (files.values() if isinstance(files, dict) else [files or []]) for p in group]
    folders = {str(Path(p).resolve().parent) for p in paths if Path(p).exists()}
    return folders.pop() if len(folders) == 1 else None


def _normalized(split, split_name: str, data: DataArguments):
    """The split with `video` and `label` columns, a Video feature cast to Video(decode=False)."""
    from datasets import Video

    columns = _columns(split)
    for option, column in (("--video_column_name", data.video_column_name),
                           ("--label_column_name", data.label_column_name)):
        if column not in columns:
            raise DataError(f"{data.source} [{split_name}] has no column {column!r} ({option}); its columns: "
                            f"{', '.join(columns)}")
    video = split.features.get(data.video_column_name) if split.features else None
    if isinstance(video, Video):  # before any rename: a stream's rename decodes its rows with the features it had
        split = split.cast_column(data.video_column_name, Video(decode=False))
    for wanted, column in (("video", data.video_column_name), ("label", data.label_column_name)):
        if column != wanted:
            if wanted in columns:
                split = split.remove_columns(wanted)
            split = split.rename_column(column, wanted)
    if getattr(video, "dtype", None) in ("string", "large_string"):
        base = _local_base(data)
        if base:
            resolve = functools.partial(_resolve_paths, base=base)
            split = split.map(resolve, batched=True, **_keep_features(split))
    return split


def _keep_features(split) -> dict:
    """A stream's map forgets its features unless told them (a map-style one keeps them)."""
    return {} if hasattr(split, "num_rows") else {"features": split.features}


def _label_values(split) -> list:
    """Every label of a split (a stream is read once, its label column alone)."""
    if hasattr(split, "unique"):
        return split.unique("label")
    return list({row["label"] for row in split.select_columns(["label"])})


def _with_class_labels(split, split_name: str, names: list[str] | None, data: DataArguments):
    """The split's labels as ints of ClassLabel(names); `names` None: this split's own (sorted strings)."""
    from datasets import ClassLabel

    feature = split.features.get("label") if split.features else None
    if isinstance(feature, ClassLabel):
        if names is None or list(feature.names) == list(names):
            return split, list(feature.names)
        own = list(feature.names)
        unknown = sorted(set(own) - set(names))
        if unknown:
            raise _unknown_labels(data, split_name, unknown, names)
        index = {name: i for i, name in enumerate(names)}
        return _relabelled(split, {i: index[name] for i, name in enumerate(own)}, names), names
    values = _label_values(split)
    if not values:
        raise DataError(f"{data.source} [{split_name}] is empty")
    if all(isinstance(v, str) for v in values):
        if names is None:
            names = sorted(values)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise _unknown_labels(data, split_name, unknown, names)
        return _relabelled(split, {name: i for i, name in enumerate(names)}, names), names
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        count = len(names) if names is not None else max(values) + 1
        if min(values) < 0 or max(values) >= count:
            raise DataError(f"{data.source} [{split_name}] has label ids outside 0-{count - 1}: "
                            f"{sorted(v for v in values if not 0 <= v < count)[:5]}")
        names = names if names is not None else [str(i) for i in range(count)]
        return split.cast_column("label", ClassLabel(names=names)), names
    raise DataError(f"{data.source} [{split_name}]: labels must be class names or ids, got "
                    f"{sorted({type(v).__name__ for v in values})}")


def _unknown_labels(data: DataArguments, split_name: str, unknown: list, names: list[str]) -> DataError:
    """The model's classes: the training split's (a label seen only at evaluation), or a trained model's."""
    def listed(values):
        return ", ".join(map(str, values[:8])) + (f" and {len(values) - 8} more" if len(values) > 8 else "")

    return DataError(f"{data.source} [{split_name}] has labels that are not among the model's classes: "
                     f"{listed(unknown)} (they are: {listed(names)})")


def _relabelled(split, index: dict, names: list[str]):
    """The split with each label `index[label]`, a ClassLabel(names): a map, not cast_column, since a stream's cast
    leaves string labels as they are."""
    from datasets import ClassLabel

    features = split.features.copy()
    features["label"] = ClassLabel(names=names)
    return split.map(functools.partial(_label_ids, index=index), batched=True, features=features)


def _label_ids(batch: dict, index: dict) -> dict:
    return {"label": [index[label] for label in batch["label"]]}


def _check_not_empty(split, split_name: str, data: DataArguments) -> None:
    if hasattr(split, "num_rows") and split.num_rows == 0:
        raise DataError(f"{data.source} [{split_name}] is empty")


def load_video_splits(data: DataArguments, split_names: Sequence[str], seed: int = 0,
                      label_names: list[str] | None = None, stream: str | None = None) -> VideoSplits:
    """The splits `split_names` (the first is the one that labels are learnt from, and held out from with
    --validation_split_fraction), normalized (see the module's docstring).

    label_names: the model's classes (evaluation): labels are mapped to them by name, and a label the model does not
    know is an error naming it. None: the classes are the first split's (ClassLabel names, or its strings sorted).
    stream: with --streaming, the split that stays a stream (training's); the others are read to local Arrow files
    once (evaluation reads every video once per scale and view).
    """
    streaming = data.streaming or stream is not None
    splits = open_dataset(data, streaming=streaming)
    first, rest = split_names[0], list(split_names[1:])
    if first not in splits:
        raise DataError(f"{data.source} has no split {first!r} (it has {', '.join(splits) or 'none'})")
    missing = [name for name in rest if name not in splits]
    if missing and data.validation_split_fraction:
        if streaming:
            raise DataError(f"{data.source} has no split {missing[0]!r}; --validation_split_fraction needs the whole "
                            f"split in hand: give a dataset with an evaluation split to --streaming")
    elif missing:
        raise DataError(f"{data.source} has no split {missing[0]!r} (it has {', '.join(splits)}): name another "
                        f"(--eval_split / --split), or hold out part of {first!r} with --validation_split_fraction")
    names = label_names
    out: dict[str, Any] = {}
    for name in [first] + [n for n in rest if n in splits]:
        split = _normalized(splits[name], name, data)
        if streaming and name != stream:
            split = _materialized(split)
        _check_not_empty(split, name, data)
        split, names = _with_class_labels(split, name, names, data)
        out[name] = split
    if missing:
        fraction = data.validation_split_fraction
        if not 0 < fraction < 1:
            raise DataError(f"--validation_split_fraction must be between 0 and 1, got {fraction}")
        try:
            held = out[first].train_test_split(test_size=fraction, seed=seed, stratify_by_column="label")
        except ValueError as error:  # e.g. fewer videos held out than there are classes
            raise DataError(f"--validation_split_fraction {fraction} of {data.source} [{first}] "
                            f"({len(out[first])} videos, {len(names)} classes), stratified by label: {error}") from None
        out[first] = held["train"]
        for name in missing:
            out[name] = held["test"]
        logger.info("held out %d of %d videos of %s [%s] as %s (stratified by label, seed %d)", len(held["test"]),
                    len(held["train"]) + len(held["test"]), data.source, first, missing[0], seed)
    return VideoSplits(out, list(names))


def model_label_names(config) -> list[str] | None:
    """A model's class names, or None where its config holds transformers' placeholders (LABEL_0, ...)."""
    names = [config.id2label[i] for i in range(config.num_labels)]
    return None if names == [f"LABEL_{i}" for i in range(len(names))] else names


def _materialized(stream):
    """A streamed evaluation split written once to local Arrow files (bytes included), map-style: the evaluation
    grid reads every video once per scale and view."""
    import atexit
    import shutil
    import tempfile

    from datasets import Dataset

    folder = tempfile.mkdtemp(prefix="stretchysnake-eval-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Dataset.from_generator(functools.partial(_rows_of, stream), features=stream.features, cache_dir=folder)


def _rows_of(stream):
    yield from stream
