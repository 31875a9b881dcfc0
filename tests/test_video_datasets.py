"""Data the Hugging Face way: `datasets.load_dataset` sources (a Hub-layout folder of Parquet shards with the videos'
bytes and a dataset card, a `videofolder` tree with metadata.csv, a CSV of paths), `ClassLabel` and string labels,
bad input, and training on a stream of shards (one process and two, a resume).

The videos are the generated actions (5 classes, 32 px); every layout is written from one manifest, so each loader
must give back the same videos with the same labels.
"""

import csv
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import PROBE, ROOT, probe_records, run_script
from modeling_stretchysnake import StretchySnakeVideoProcessor
from modeling_stretchysnake.training import streaming
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.training.scales import Scale, ScaleSampler
from modeling_stretchysnake.training.streaming import StreamedClipBatches, StreamedVideos, usable_workers
from modeling_stretchysnake.training.video_datasets import DataArguments, DataError, load_video_splits
from modeling_stretchysnake.video_decoding import video_name

TRAIN_SHARDS = 4


@pytest.fixture(autouse=True)
def short_pause_after_each_pass(monkeypatch):
    """datasets pauses 5 s at the end of every pass over a stream of Parquet shards (a guard against an Arrow
    thread-shutdown crash, apache/arrow#45214); these tests end a dozen tiny passes."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.1)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same 16 training and 5 test videos in four layouts: {name: DataArguments}, and the manifest."""
    from datasets import ClassLabel, Dataset, Features, Video

    from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

    root = tmp_path_factory.mktemp("layouts")
    manifest = generate_action_dataset(root / "generated", {"train": 4, "test": 1}, num_frames=6, size=32)
    manifest["train"] = manifest["train"].shuffle(seed=0).select(range(16))  # 4 shards of 4
    names = manifest["train"].features["label"].names

    hub = root / "hub"
    (hub / "data").mkdir(parents=True)
    features = Features({"video": Video(), "label": ClassLabel(names=names)})
    for split, shards in (("train", TRAIN_SHARDS), ("test", 1)):
        rows = manifest[split]
        videos = [{"path": f"{split}/{i:02d}.mp4", "bytes": open(path, "rb").read()} for i, path in enumerate(rows["video"])]
        table = Dataset.from_dict({"video": videos, "label": rows["label"]}, features=features)
        for shard in range(shards):
            table.shard(shards, shard, contiguous=True).to_parquet(str(hub / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet"))
    (hub / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: "
                                   "data/train-*.parquet\n  - split: test\n    path: data/test-*.parquet\n---\n")

    folder, table_dir = root / "videofolder", root / "csv"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        (table_dir / "clips" / split).mkdir(parents=True, exist_ok=True)
        with open(folder / split / "metadata.csv", "w", newline="") as meta, \
                open(table_dir / f"{split}.csv", "w", newline="") as listing:
            meta_rows, list_rows = csv.writer(meta), csv.writer(listing)
            meta_rows.writerow(["file_name", "action"])
            list_rows.writerow(["clip", "action"])
            for i, (path, label) in enumerate(zip(manifest[split]["video"], manifest[split]["label"])):
                shutil.copy(path, folder / split / f"{i:02d}.mp4")
                shutil.copy(path, table_dir / "clips" / split / f"{i:02d}.mp4")
                meta_rows.writerow([f"{i:02d}.mp4", names[label]])
                list_rows.writerow([f"clips/{split}/{i:02d}.mp4", names[label]])  # relative to the CSV's folder
    manifest.save_to_disk(str(root / "manifest"))
    return {
        "hub": DataArguments(dataset_name=str(hub)),
        "videofolder": DataArguments(dataset_name="videofolder", data_dir=str(folder), label_column_name="action"),
        "csv": DataArguments(dataset_name="csv", data_files=[f"train={table_dir / 'train.csv'}",
                                                              f"test={table_dir / 'test.csv'}"],
                             video_column_name="clip", label_column_name="action"),
        "manifest": DataArguments(manifest=str(root / "manifest")),
    }, manifest


def first_frames(split, count=5):
    """The decoded training clips of the first `count` rows (4 frames at 32 px), and their label names."""
    dataset = VideoClipDataset(split, StretchySnakeVideoProcessor(), training=True, decoder="pyav")
    names = split.features["label"].names
    return [(dataset.load(i, 4, 32), names[split[i]["label"]]) for i in range(count)]


@pytest.mark.parametrize("layout", ["hub", "videofolder", "csv"])
def test_every_layout_gives_the_manifests_videos_and_labels(layouts, layout):
    data, manifest = layouts
    videos = load_video_splits(data[layout], ["train", "test"])
    reference = load_video_splits(data["manifest"], ["train", "test"])
    assert sorted(videos.label_names) == sorted(reference.label_names)
    if layout != "hub":  # string labels: the class names sorted
        assert videos.label_names == sorted(reference.label_names)
    for split in ("train", "test"):
        assert len(videos[split]) == len(manifest[split])
        for (clip, name), (expected_clip, expected_name) in zip(first_frames(videos[split]),
                                                                first_frames(reference[split])):
            assert name == expected_name and torch.equal(clip, expected_clip)


def test_a_stream_gives_the_same_rows(layouts):
    data, _ = layouts
    streamed = load_video_splits(DataArguments(**{**vars(data["hub"]), "streaming": True}), ["train", "test"],
                                 stream="train")
    whole = load_video_splits(data["hub"], ["train", "test"])
    rows = list(streamed["train"])
    assert [row["label"] for row in rows] == whole["train"]["label"]
    assert [row["video"]["bytes"] for row in rows] == [row["video"]["bytes"] for row in whole["train"]]
    assert len(streamed["test"]) == 5 and streamed["test"]["label"] == whole["test"]["label"]  # read to Arrow once


def test_webdataset_shards_stream_their_bytes_and_class_ids(layouts, tmp_path):
    import io
    import tarfile

    _, manifest = layouts
    for shard in range(2):  # WebDataset-style tar shards: KEY.mp4 and KEY.cls per video
        with tarfile.open(tmp_path / f"train-{shard}.tar", "w") as tar:
            for i in range(shard * 8, shard * 8 + 8):
                for suffix, data in (("mp4", open(manifest["train"][i]["video"], "rb").read()),
                                     ("cls", str(manifest["train"][i]["label"]).encode())):
                    member = tarfile.TarInfo(f"clip{i:02d}.{suffix}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    data = DataArguments("webdataset", data_files=[f"train={tmp_path}/train-*.tar"], video_column_name="mp4",
                         label_column_name="cls", streaming=True)
    videos = load_video_splits(data, ["train"], stream="train")
    rows = list(videos["train"])
    assert [row["label"] for row in rows] == manifest["train"]["label"]
    assert [row["video"]["bytes"] for row in rows] == [open(p, "rb").read() for p in manifest["train"]["video"]]
    assert videos.label_names == ["0", "1", "2", "3", "4"]  # class ids, named by their number


def test_evaluation_maps_labels_to_the_models_classes_by_name(layouts):
    data, _ = layouts
    trained = load_video_splits(data["csv"], ["train"]).label_names
    reversed_names = trained[::-1]
    videos = load_video_splits(data["hub"], ["test"], label_names=reversed_names)
    original = load_video_splits(data["hub"], ["test"])
    assert videos.label_names == reversed_names
    for mapped, plain in zip(videos["test"]["label"], original["test"]["label"]):
        assert reversed_names[mapped] == original.label_names[plain]
    with pytest.raises(DataError, match=r"not among the model's classes: move_up \(they are: "):
        load_video_splits(data["csv"], ["test"], label_names=[n for n in trained if n != "move_up"])


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return str(path)


def test_bad_data_is_one_line(layouts, tmp_path):
    data, manifest = layouts
    video = manifest["test"]["video"][0]
    with pytest.raises(DataError) as missing_column:
        load_video_splits(DataArguments(**{**vars(data["csv"]), "video_column_name": "path"}), ["train"])
    assert "has no column 'path' (--video_column_name); its columns: clip, action" in str(missing_column.value)
    train = write_csv(tmp_path / "train.csv", [["video", "label"], [video, "jump"], [video, "run"]])
    test = write_csv(tmp_path / "test.csv", [["video", "label"], [video, "swim"]])
    with pytest.raises(DataError, match=r"\[test\] has labels that are not among the model's classes: swim \(they are: jump, run\)"):
        load_video_splits(DataArguments("csv", data_files=[f"train={train}", f"test={test}"]), ["train", "test"])
    empty = write_csv(tmp_path / "empty.csv", [["video", "label"]])
    with pytest.raises(DataError, match=r"\[test\] is empty"):
        load_video_splits(DataArguments("csv", data_files=[f"train={train}", f"test={empty}"]), ["train", "test"])
    with pytest.raises(DataError, match="has no split 'validation' .*--validation_split_fraction"):
        load_video_splits(data["hub"], ["train", "validation"])
    for error in (missing_column.value,):
        assert "\n" not in str(error)


def test_validation_split_fraction_holds_out_every_class_alike(layouts):
    data, _ = layouts
    held = DataArguments(**{**vars(data["hub"]), "validation_split_fraction": 5 / 16})
    first = load_video_splits(held, ["train", "validation"], seed=3)
    again = load_video_splits(held, ["train", "validation"], seed=3)
    assert (len(first["train"]), len(first["validation"])) == (11, 5)
    assert first["validation"]["video"] == again["validation"]["video"]  # the same for the same seed
    assert np.bincount(first["validation"]["label"], minlength=5).tolist() == [1] * 5  # stratified
    too_few = DataArguments(**{**vars(data["hub"]), "validation_split_fraction": 0.25})
    with pytest.raises(DataError, match=r"0.25 of .* \(16 videos, 5 classes\), stratified by label: The test_size"):
        load_video_splits(too_few, ["train", "validation"])


def stream_of(data, **options):
    rows = load_video_splits(DataArguments(**{**vars(data), "streaming": True}), ["train"], stream="train")["train"]
    return StreamedVideos(rows, StretchySnakeVideoProcessor(), decoder="pyav", shuffle_buffer_size=4, **options)


def test_each_process_and_worker_reads_its_own_rows_once_a_pass(layouts):
    data, _ = layouts
    videos = stream_of(data["hub"])
    sampler = ScaleSampler("static_tokens", frames=[2, 4], resolutions=[16, 32], grid=4, seed=0)
    passes = {0: [], 1: []}
    for rank in (0, 1):
        batches = StreamedClipBatches(videos, 2, sampler, num_replicas=2, rank=rank)
        assert batches.max_workers == 2
        for role in (0, 1):
            for pass_index in passes:
                passes[pass_index].append([video_name(row["video"]) for row in
                                           batches.rows_of_role(role, 2, pass_index)])
    for readers in passes.values():
        names = [name for reader in readers for name in reader]
        assert len(names) == len(set(names)) == 16 and all(len(reader) == 4 for reader in readers)
    assert passes[0] != passes[1] and [sorted(r) for r in passes[0]] == [sorted(r) for r in passes[1]]  # reshuffled


def test_processes_and_workers_get_even_shares_of_the_shards(layouts):
    from datasets import Dataset

    rows = Dataset.from_dict({"video": [f"{i}.mp4" for i in range(24)], "label": [0] * 24}).to_iterable_dataset(6)
    videos = StreamedVideos(rows, None, shuffle_buffer_size=0)
    sampler = ScaleSampler("static_tokens", frames=[2], resolutions=[32], grid=4)
    read = {}
    for rank in (0, 1):  # 6 shards: 3 whole shards per process, each worker of 3 one shard
        batches = StreamedClipBatches(videos, 2, sampler, num_replicas=2, rank=rank)
        workers = usable_workers(4, batches.max_workers)
        assert (batches.max_workers, workers) == (3, 3)
        for role in range(workers):
            read[(rank, role)] = [row["video"] for row in batches.rows_of_role(role, workers, 0)]
    assert all(len(names) == 4 for names in read.values())
    assert sorted(name for names in read.values() for name in names) == sorted(f"{i}.mp4" for i in range(24))
    assert [usable_workers(w, 6) for w in (0, 1, 2, 3, 4, 5, 6, 8)] == [0, 1, 2, 3, 3, 3, 6, 6]
    odd = StreamedClipBatches(StreamedVideos(Dataset.from_dict({"video": [f"{i}.mp4" for i in range(9)], "label": [0] * 9})
                                             .to_iterable_dataset(3), None, shuffle_buffer_size=0), 2, sampler,
                              num_replicas=2, rank=1)  # 3 shards for 2 processes: every shard, every other row
    assert odd.max_workers == 3 and [row["video"] for row in odd.rows_of_role(0, 1, 0)] == ["1.mp4", "3.mp4",
                                                                                            "5.mp4", "7.mp4"]


def test_a_stream_resumes_at_its_step_without_decoding_the_steps_before(layouts, monkeypatch):
    data, _ = layouts
    sampler = ScaleSampler("static_tokens", frames=[2, 4], resolutions=[16, 32], grid=4, seed=0)
    unbroken = StreamedClipBatches(stream_of(data["hub"]), 2, sampler)
    steps = [batch for _, batch in zip(range(6), unbroken)]
    decoded, decode_row = [], streaming.decode_row

    def counted(row, *args):
        decoded.append(row)
        return decode_row(row, *args)

    monkeypatch.setattr(streaming, "decode_row", counted)
    resumed = StreamedClipBatches(stream_of(data["hub"]), 2, sampler, start_step=4)
    later = [batch for _, batch in zip(range(2), resumed)]
    assert len(decoded) == 4  # two steps of two clips: the four steps before were read, not decoded
    for before, after in zip(steps[4:], later):
        assert (before["step"], before["index"]) == (after["step"], after["index"])
        assert torch.equal(before["pixel_values"], after["pixel_values"])
    assert len({batch["pixel_values"].shape[1:] for batch in steps}) > 1  # scales do change step to step
    budget = StreamedClipBatches(stream_of(data["hub"]), 2, sampler, tokens_per_batch=128, max_batch_size=6)
    for batch in (batch for _, batch in zip(range(6), budget)):  # token-budget batching: clips follow the scale
        frames, resolution = batch["pixel_values"].shape[1], batch["pixel_values"].shape[-1]
        scale = Scale(frames, resolution, resolution // 4)
        assert len(batch["labels"]) == budget.clips(scale) == min(6, max(1, round(128 / scale.tokens)))


def test_an_undecodable_row_is_skipped_and_counted(layouts, tmp_path):
    from datasets import ClassLabel, Dataset, Features, Video

    data, manifest = layouts
    good = [{"path": f"{i}.mp4", "bytes": open(p, "rb").read()} for i, p in enumerate(manifest["train"]["video"][:3])]
    rows = [good[0], {"path": "broken.mp4", "bytes": b"not a video"}, good[1], good[2]]
    table = Dataset.from_dict({"video": rows, "label": [0, 1, 2, 3]},
                              features=Features({"video": Video(), "label": ClassLabel(num_classes=5)}))
    table.to_parquet(str(tmp_path / "train.parquet"))
    videos = stream_of(DataArguments("parquet", data_files=[f"train={tmp_path / 'train.parquet'}"]))
    videos.shuffle_buffer_size = 0
    batches = StreamedClipBatches(videos, 3, ScaleSampler("static_tokens", frames=[2], resolutions=[32], grid=4))
    batch = next(iter(batches))
    assert batch["index"] == ["0.mp4", "1.mp4", "2.mp4"] and batch["labels"].tolist() == [0, 2, 3]
    assert batch["skipped"] == ["broken.mp4"]


LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(ROOT / "recipes" / "configs" / "accelerate" / "cpu_2proc.yaml")]


def test_two_processes_two_workers_stream_disjoint_shards_at_one_scale_per_step(layouts, tmp_path):
    data, _ = layouts
    stream = ["--stream", data["hub"].dataset_name, "--workers", "2"]
    run_script(LAUNCH + [PROBE, *stream, "--output_dir", str(tmp_path / "run"), "--max_steps", "4", "--save_steps",
                         "2"], tmp_path, timeout=900)
    rank0, rank1 = probe_records(tmp_path / "run")
    assert (rank0["world_size"], rank1["world_size"]) == (2, 2)
    names = [name for record in (rank0, rank1) for step in record["steps"] for name in step["indices"]]
    assert len(names) == len(set(names)) == 16  # 4 steps x 2 clips x 2 processes: every video once, one pass
    for mine, theirs in zip(rank0["steps"], rank1["steps"]):
        assert (mine["frames"], mine["resolution"]) == (theirs["frames"], theirs["resolution"])
    assert len({(s["frames"], s["resolution"]) for s in rank0["steps"]}) > 1
    run_script(LAUNCH + [PROBE, *stream, "--output_dir", str(tmp_path / "run"), "--max_steps", "4",
                         "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-2")], tmp_path, timeout=900)
    for before, after in zip((rank0, rank1), probe_records(tmp_path / "run")):
        assert [s["indices"] for s in after["steps"]] == [s["indices"] for s in before["steps"][2:]]
        assert [s["loss"] for s in after["steps"]] == [s["loss"] for s in before["steps"][2:]]


def test_recipes_take_a_dataset(layouts, tmp_path):
    """train.py on a stream of the Hub-layout folder in 2 processes, and on the videofolder tree;
    evaluate_model.py and calibrate_cascade.py on the CSV of paths, whose string labels map to the trained model's
    classes by name."""
    data, _ = layouts
    tiny = ["--train_frames", "2", "4", "--train_resolutions", "28", "56", "--per_device_train_batch_size", "2",
            "--logging_steps", "1", "--baseline", "none", "--eval_frames", "4", "--eval_resolutions", "28"]
    streamed = run_script(LAUNCH + [str(ROOT / "recipes" / "train.py"), "--dataset_name", data["hub"].dataset_name,
                                    "--streaming", "--max_steps", "2", "--dataloader_num_workers", "2",
                                    "--output_dir", str(tmp_path / "streamed"), *tiny], tmp_path, timeout=900)
    assert "a stream of 4 shard(s) train / 5 eval videos" in streamed.stderr
    assert "process rank 1 of world size 2" in streamed.stderr
    run_script([sys.executable, str(ROOT / "recipes" / "train.py"), "--dataset_name", "videofolder", "--data_dir",
                data["videofolder"].data_dir, "--label_column_name", "action", "--max_steps", "2",
                "--output_dir", str(tmp_path / "out"), *tiny], tmp_path)
    model = tmp_path / "out" / "final"
    csv_data = ["--dataset_name", "csv", "--data_files", *data["csv"].data_files, "--video_column_name", "clip",
                "--label_column_name", "action"]
    result = run_script([sys.executable, str(ROOT / "recipes" / "evaluate_model.py"), "--model", str(model),
                         *csv_data, "--frames", "2", "--resolutions", "28", "--cost", "none", "--no_save_to_model"],
                        tmp_path)
    assert "5 videos of csv (train=" in result.stdout
    result = run_script([sys.executable, str(ROOT / "recipes" / "calibrate_cascade.py"), "--model", str(model),
                         *csv_data, "--split", "test", "--frames", "2", "4", "--resolutions", "28"], tmp_path)
    assert "5 videos of csv" in result.stdout
    no_steps = run_script_failure([sys.executable, str(ROOT / "recipes" / "train.py"), "--dataset_name",
                                   data["hub"].dataset_name, "--streaming", "--output_dir", str(tmp_path / "x")],
                                  tmp_path)
    assert no_steps.strip().splitlines()[-2:] == [
        "error: --streaming reads the training split as a stream with no length: give --max_steps",
        "(run with --debug for the traceback)"]


def run_script_failure(command, cwd) -> str:
    import subprocess

    from conftest import script_env

    result = subprocess.run(command, cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    return result.stderr
