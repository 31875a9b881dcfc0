"""Each dataset script on a tiny fake tree in the official layout (real videos, real annotation formats)."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from modeling_stretchysnake import StretchySnakeVideoProcessor
from modeling_stretchysnake.training.data import VideoClipDataset
from conftest import ROOT
from modeling_stretchysnake.training.synthetic_actions import write_video

sys.path.insert(0, str(ROOT))
from data_scripts import breakfast, coin, custom, diving48, hmdb51, ssv2, ucf101  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames)


def place(clip, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip, path)
    return path


def decodes(manifest_split):
    item = VideoClipDataset(manifest_split, StretchySnakeVideoProcessor(), training=True)[(0, 2, 28, 2)]
    return item["pixel_values"].shape == (2, 3, 28, 28)


def test_ucf101(tmp_path, clip):
    lists, videos = tmp_path / "ucfTrainTestlist", tmp_path / "UCF-101"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    (lists / "trainlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_bytes(b"HandstandPushups/v_HandStandPushups_g01_c01.avi\r\n")
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                 "HandstandPushups/v_HandStandPushups_g01_c01.avi"):
        place(clip, videos / name)
    ucf101.main(["--videos", str(videos), "--lists", str(lists), "--split", "1", "--output", str(tmp_path / "m")])
    manifest = load_from_disk(str(tmp_path / "m"))
    assert list(manifest["train"]["label"]) == [0, 1] and list(manifest["test"]["label"]) == [1]
    assert manifest["train"].features["label"].names == ["ApplyEyeMakeup", "HandstandPushups"]
    assert manifest["test"][0]["video"].endswith("HandstandPushups/v_HandStandPushups_g01_c01.avi")
    assert decodes(manifest["test"])


def test_hmdb51(tmp_path, clip):
    split_dir, videos = tmp_path / "testTrainMulti_7030_splits", tmp_path / "hmdb51"
    split_dir.mkdir()
    (split_dir / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (split_dir / "cartwheel_test_split1.txt").write_text("d.avi 2 \n")
    (split_dir / "cartwheel_test_split2.txt").write_text("d.avi 1 \n")
    for name in ("brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "cartwheel/d.avi"):
        place(clip, videos / name)
    manifest = hmdb51.build(videos, split_dir, 1, tmp_path / "m")
    assert [r["video"].split("/")[-1] for r in manifest["train"]] == ["a.avi"]
    assert list(manifest["test"]["label_name"]) == ["brush_hair", "cartwheel"] and list(manifest["test"]["label"]) == [0, 1]


def test_ssv2(tmp_path, clip):
    labels, videos = tmp_path / "labels", tmp_path / "videos"
    labels.mkdir()
    (labels / "something-something-v2-labels.json").write_text(json.dumps(
        {"Holding something": "1", "Pushing something from left to right": "0"}))
    (labels / "something-something-v2-train.json").write_text(json.dumps([
        {"id": "11", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right",
         "placeholders": ["a cup"]},
        {"id": "12", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]}]))
    (labels / "something-something-v2-validation.json").write_text(json.dumps([
        {"id": "13", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]}]))
    (labels / "something-something-v2-test.json").write_text(json.dumps([{"id": "14"}]))
    for i in (11, 12, 13):
        place(clip, videos / f"{i}.webm")
    manifest = ssv2.build(videos, labels, tmp_path / "m")
    assert list(manifest["train"]["label"]) == [0, 1] and list(manifest["validation"]["label"]) == [1]
    assert manifest["train"].features["label"].names == ["Pushing something from left to right", "Holding something"]


def test_diving48_segments(tmp_path, clip):
    (tmp_path / "Diving48_vocab.json").write_text(json.dumps([["Back", "15som", "NoTwis", "PIKE"], ["Forward", "25som", "1Twis", "FREE"]]))
    (tmp_path / "Diving48_V2_train.json").write_text(json.dumps([{"vid_name": "abc_00001", "label": 1, "start_frame": 2, "end_frame": 6}]))
    (tmp_path / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "abc_00002", "label": 0, "start_frame": 0, "end_frame": 7}]))
    place(clip, tmp_path / "rgb" / "abc_00001.mp4")
    place(clip, tmp_path / "rgb" / "abc_00002.mp4")
    manifest = diving48.build(tmp_path, tmp_path / "m")
    train = manifest["train"][0]
    assert (train["label"], train["label_name"], train["start"], train["end"], train["time_unit"]) == (1, "Forward_25som_1Twis_FREE", 2.0, 7.0, "frames")
    assert decodes(manifest["train"])


def test_coin_tasks_and_seconds(tmp_path, clip):
    database = {
        "yt1": {"class": "MakeCoffee", "recipe_type": 1, "subset": "training", "start": 0.1, "end": 0.6, "annotation": []},
        "yt2": {"class": "ChangeTire", "recipe_type": 0, "subset": "testing", "start": 0.0, "end": 0.5, "annotation": []},
    }
    (tmp_path / "COIN.json").write_text(json.dumps({"database": database}))
    place(clip, tmp_path / "videos" / "yt1.mp4")
    place(clip, tmp_path / "videos" / "yt2.webm")  # found whatever the extension
    manifest = coin.build(tmp_path / "COIN.json", tmp_path / "videos", tmp_path / "m")
    assert manifest["train"].features["label"].names == ["ChangeTire", "MakeCoffee"]
    assert manifest["train"][0]["time_unit"] == "seconds" and manifest["train"][0]["label"] == 1
    assert manifest["test"][0]["video"].endswith("yt2.webm")
    assert decodes(manifest["train"])


@pytest.mark.parametrize("protocol,train_people,test_people", [("long", {3, 46}, {47, 54}), ("s1", {46, 47, 54}, {3})])
def test_breakfast_protocols(tmp_path, clip, protocol, train_people, test_people):
    for person, camera, activity in ((3, "cam01", "cereals"), (46, "webcam01", "tea"), (47, "stereo", "juice_ch1"),
                                     (54, "cam02", "salat")):
        place(clip, tmp_path / f"P{person:02d}" / camera / f"P{person:02d}_{activity}.avi")
    manifest = breakfast.build(tmp_path, protocol, tmp_path / f"m_{protocol}")
    people = {split: {int(Path(v).name[1:3]) for v in manifest[split]["video"]} for split in ("train", "test")}
    assert people == {"train": train_people, "test": test_people}
    assert len(manifest["train"].features["label"].names) == 10
    assert "juice" in list(manifest["train"]["label_name"]) + list(manifest["test"]["label_name"])


def test_custom_folder_and_list(tmp_path, clip):
    for name in ("dunk/a.mp4", "dunk/b.mp4", "layup/c.mp4"):
        place(clip, tmp_path / "mine" / name)
    manifest = custom.build(custom.entries_from_folder(tmp_path / "mine"), tmp_path / "m1")
    assert list(manifest["train"]["label_name"]) == ["dunk", "dunk", "layup"] and list(manifest["train"]["label"]) == [0, 0, 1]
    (tmp_path / "list.csv").write_text("path,label,start,end,split\nmine/dunk/a.mp4,dunk,0.1,0.5,train\n"
                                       "mine/layup/c.mp4,layup,,,test\nmine/layup/missing.mp4,layup,,,test\n")
    manifest = custom.build(custom.entries_from_list(tmp_path / "list.csv"), tmp_path / "m2")
    assert manifest["train"][0]["start"] == 0.1 and list(manifest["test"]["label"]) == [1]  # the missing file is dropped
    assert manifest["train"][0]["time_unit"] == "seconds" and manifest["test"][0]["time_unit"] == "frames"  # untimed
    (tmp_path / "list.json").write_text(json.dumps([{"path": "mine/dunk/b.mp4", "label": "dunk"}]))
    assert len(custom.build(custom.entries_from_list(tmp_path / "list.json"), tmp_path / "m3")["train"]) == 1


def clip_entries(per_class, sources=1):
    """Entries (no files needed for the split itself): `per_class` clips for each class, `sources` clips per source
    video (UCF-101 style names v_<class>_g<source>_c<clip>.avi)."""
    return [{"path": f"/videos/{label}/v_{label}_g{index // sources:02d}_c{index % sources:02d}.avi", "label": label}
            for label, count in per_class.items() for index in range(count)]


def split_counts(entries, splits):
    counts = {}
    for entry, split in zip(entries, splits):
        counts.setdefault(entry["label"], {}).setdefault(split, 0)
        counts[entry["label"]][split] += 1
    return counts


def test_custom_split_is_stratified_and_reproducible():
    entries = clip_entries({"a": 10, "b": 20, "c": 3, "d": 2, "e": 1})
    splits = custom.assign_splits(entries, test_fraction=0.3, seed=0)
    counts = split_counts(entries, splits)
    assert counts["a"] == {"train": 7, "test": 3} and counts["b"] == {"train": 14, "test": 6}
    assert counts["c"] == {"train": 2, "test": 1} and counts["d"] == {"train": 1, "test": 1}  # one on each side
    assert counts["e"] == {"train": 1}  # a single clip stays in training
    assert custom.assign_splits(entries, 0.3, seed=0) == splits
    assert custom.assign_splits(entries, 0.3, seed=1) != splits
    with_val = split_counts(entries, custom.assign_splits(entries, 0.2, val_fraction=0.1, seed=0))
    assert with_val["b"] == {"train": 14, "test": 4, "val": 2} and with_val["c"] == {"train": 1, "test": 1, "val": 1}
    # rows that name their split keep it
    entries[0]["split"] = "val"
    assert custom.assign_splits(entries, 0.3, seed=0)[0] == "val"


def test_custom_group_by_keeps_each_source_in_one_split():
    entries = clip_entries({"a": 24, "b": 12}, sources=4)  # 6 and 3 source videos of 4 clips each
    for group_by in ("_g(\\d+)_", "source"):
        if group_by == "source":
            for entry in entries:
                entry["source"] = Path(entry["path"]).name[:-8]
        splits = custom.assign_splits(entries, test_fraction=0.3, seed=0, group_by=group_by)
        by_source = {}
        for entry, split in zip(entries, splits):
            by_source.setdefault((entry["label"], Path(entry["path"]).name[:-8]), set()).add(split)
        assert all(len(split_set) == 1 for split_set in by_source.values())
        counts = split_counts(entries, splits)
        assert counts["a"] == {"train": 16, "test": 8} and counts["b"] == {"train": 8, "test": 4}


def test_custom_command_prints_the_split_and_reports_bad_rows_in_one_line(tmp_path, clip):
    import subprocess

    for index in range(4):
        place(clip, tmp_path / "mine" / ("dunk" if index < 2 else "layup") / f"{index}.mp4")
    command = [sys.executable, str(ROOT / "data_scripts" / "custom.py"), "--folder", str(tmp_path / "mine"),
               "--test-fraction", "0.5", "--output", str(tmp_path / "m")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["class", "train", "test"] in rows and ["dunk", "1", "1"] in rows and ["layup", "1", "1"] in rows
    (tmp_path / "bad.csv").write_text("path,label,start,end\nmine/dunk/0.mp4,dunk,2.0,1.0\n")
    bad = [sys.executable, str(ROOT / "data_scripts" / "custom.py"), "--list", str(tmp_path / "bad.csv"),
           "--output", str(tmp_path / "m2")]
    result = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'bad.csv'}, row 2: end=1.0 must be after start=2.0" in result.stderr
    result = subprocess.run(bad + ["--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ValueError" in result.stderr
