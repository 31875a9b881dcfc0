"""Inputs from outside the project: odd arrays, bad scales, segments, variable frame rates, long files, hand-made
manifests, and datasets where nothing decodes. Each case either works or fails with a message that says why."""

import fractions
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.video_decoding import VideoDecodeError, read_video
from modeling_stretchysnake.training.synthetic_actions import write_video

sys.path.insert(0, str(ROOT / "recipes"))
sys.path.insert(0, str(ROOT))
import evaluate_model as evaluate_recipe  # noqa: E402
import predict as predict_recipe  # noqa: E402
from data_scripts import custom  # noqa: E402

try:
    import decord  # noqa: F401

    HAVE_DECORD = True
except ImportError:
    HAVE_DECORD = False
BACKENDS = ["pyav", pytest.param("decord", marks=pytest.mark.skipif(not HAVE_DECORD, reason="decord not installed"))]


def brightness_index(frames):
    return np.round(frames.reshape(len(frames), -1).mean(1) / 12).astype(int).tolist()


def write_variable_frame_rate_video(path: Path, times: list[float], size=(32, 32)) -> Path:
    """Frame i has brightness 12 * i and is shown at times[i] seconds (millisecond timestamps)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, time in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full(size + (3,), i * 12, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    frames = np.stack([np.full((32, 48, 3), i * 12, np.uint8) for i in range(20)])
    return write_video(tmp_path_factory.mktemp("videos") / "ramp.mp4", frames, fps=10)


# ----- the processor -----

def test_float_frames_outside_unit_range_are_refused():
    processor = StretchySnakeVideoProcessor(num_frames=2, resolution=16)
    video = np.random.default_rng(0).uniform(0, 255, (4, 20, 20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\].*uint8"):
        processor(video)
    as_uint8 = processor(video.astype(np.uint8))["pixel_values"]
    as_unit = processor(video.astype(np.uint8).astype(np.float32) / 255)["pixel_values"]
    torch.testing.assert_close(as_uint8, as_unit)


@pytest.mark.parametrize("scale", [(0, 16), (2, 0), (-1, 16), (2, -8), (2.5, 16)])
def test_bad_scales_say_what_is_expected(ramp_video, scale):
    processor = StretchySnakeVideoProcessor()
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        processor(str(ramp_video), scale=scale)


def test_path_with_do_sample_frames_false_and_seconds_on_arrays_are_explained(ramp_video):
    processor = StretchySnakeVideoProcessor(num_frames=2, resolution=16)
    with pytest.raises(ValueError, match="a video file is always sampled"):
        processor(Path(ramp_video), do_sample_frames=False)
    assert processor(Path(ramp_video))["pixel_values"].shape == (1, 2, 3, 16, 16)  # a Path like a str
    with pytest.raises(ValueError, match="no frame rate"):
        processor(np.zeros((10, 16, 16, 3), np.uint8), start=1.0, end=2.0, time_unit="seconds")


def test_predict_recipe_refuses_a_zero_scale(ramp_video, tmp_path):
    StretchySnakeForVideoClassification(small_config()).save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit):
        predict_recipe.main(["--model", str(tmp_path / "model"), "--video", str(ramp_video), "--frames", "0",
                             "--resolution", "0"])


# ----- segments and decoding -----

@pytest.mark.parametrize("backend", BACKENDS)
def test_segments_past_the_end_or_reversed_are_errors(ramp_video, backend):
    with pytest.raises(VideoDecodeError, match="past the end|no frames in"):
        read_video(ramp_video, 4, start=60.0, end=70.0, time_unit="seconds", backend=backend)  # a 2 s clip
    with pytest.raises(VideoDecodeError, match="past the end"):
        read_video(ramp_video, 4, start=25, backend=backend)  # 20 frames
    with pytest.raises(ValueError, match="end after it starts"):
        read_video(ramp_video, 4, start=10, end=5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seconds_follow_timestamps_in_variable_frame_rate_files(tmp_path, backend):
    # 10 frames 0.05 s apart, then 10 frames 0.25 s apart: [1, 2) s holds frames 12-15 (1.0, 1.25, 1.5, 1.75 s),
    # while the average rate (about 7 fps) would point at frames 7-13.
    times = [0.05 * i for i in range(10)] + [0.5 + 0.25 * (i - 10) for i in range(10, 20)]
    video = write_variable_frame_rate_video(tmp_path / "vfr.mp4", times)
    frames = read_video(video, 4, start=1.0, end=2.0, time_unit="seconds", backend=backend)
    assert brightness_index(frames) == [12, 13, 14, 15]


def test_pyav_memory_does_not_grow_with_video_length(tmp_path):
    """8 frames of a 600-frame file: only the sampled frames are converted and kept (the old reader kept all)."""
    frames = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 120, 160, 3), dtype=np.uint8), 600, axis=0)
    frames[:, :16, :16] = (np.arange(600) % 20 * 12)[:, None, None, None]
    video = write_video(tmp_path / "long.mp4", frames, fps=12)
    tracemalloc.start()
    try:
        sampled = read_video(video, 8, backend="pyav")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sampled.shape == (8, 120, 160, 3)
    one_frame = 120 * 160 * 3
    assert peak < 40 * one_frame, f"decoding kept {peak / one_frame:.0f} frames' worth of memory"
    expected = np.linspace(0, 599, 8).round().astype(int) % 20
    assert np.round(sampled[:, :16, :16].reshape(8, -1).mean(1) / 12).astype(int).tolist() == expected.tolist()


# ----- hand-made manifests (data_scripts/custom.py) -----

def test_custom_folder_finds_every_common_container(tmp_path):
    for name in ("a.mp4", "b.mpg", "c.ts", "d.3gp", "e.MTS", "notes.txt"):
        (tmp_path / "jump" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "jump" / name).write_bytes(b"")
    found = {Path(entry["path"]).name for entry in custom.entries_from_folder(tmp_path)}
    assert found == {"a.mp4", "b.mpg", "c.ts", "d.3gp", "e.MTS"}


def test_custom_list_strips_labels_and_names_bad_rows(tmp_path):
    listing = tmp_path / "clips.csv"
    listing.write_text("path,label,start,end\na.mp4, bikes ,0,2\nb.mp4,bikes,,\n")
    entries = custom.entries_from_list(listing)
    assert [entry["label"] for entry in entries] == ["bikes", "bikes"]
    assert (entries[0]["start"], entries[0]["end"], entries[1]["start"]) == (0.0, 2.0, None)
    for body, message in [("c.mp4,,0,1\n", r"row 2: 'label' is missing or empty"),
                          ("c.mp4,run,soon,1\n", r"row 2: start='soon' is not a number"),
                          ("c.mp4,run,5,1\n", r"row 2: end=1.0 must be after start=5.0")]:
        listing.write_text("path,label,start,end\n" + body)
        with pytest.raises(ValueError, match=message):
            custom.entries_from_list(listing)


# ----- evaluation over unreadable files -----

def make_manifest(tmp_path, paths):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"video": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    rows = [{"video": str(path), "label": i % 3} for i, path in enumerate(paths)]
    DatasetDict({"test": Dataset.from_list(rows, features=features)}).save_to_disk(str(tmp_path / "manifest"))
    StretchySnakeForVideoClassification(small_config()).save_pretrained(tmp_path / "model")
    return ["--model", str(tmp_path / "model"), "--manifest", str(tmp_path / "manifest"), "--frames", "2",
            "--resolutions", "16", "32", "--output_dir", str(tmp_path / "out")]


def test_evaluate_with_no_readable_video_exits_with_a_message(tmp_path):
    broken = [tmp_path / f"broken_{i}.mp4" for i in range(3)]
    for path in broken:
        path.write_text("not a video")
    with pytest.raises(SystemExit, match="cannot evaluate .*none of the 3 videos tried from index 0 \\(of 3\\) can be read"):
        evaluate_recipe.main(make_manifest(tmp_path, broken))


def test_evaluate_counts_each_unreadable_file_once(tmp_path, ramp_video, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"")
    evaluate_recipe.main(make_manifest(tmp_path, [ramp_video, broken, ramp_video]))  # 2 scales: 2 skip events
    assert "unreadable videos skipped: 1 distinct file(s)" in capsys.readouterr().out


# ----- display rotation (phone videos) -----

@pytest.fixture(scope="module")
def rotated_video(tmp_path_factory):
    """A 48 x 32 (w x h) landscape recording shown as a 32 x 48 portrait: a white block stored top-left shows
    bottom-left after the 90 degree counter-clockwise turn."""
    frames = np.full((6, 32, 48, 3), 40, np.uint8)
    frames[:, :12, :12] = 255
    upright = np.ascontiguousarray(np.rot90(frames, 1, axes=(1, 2)))
    return write_video(tmp_path_factory.mktemp("rotated") / "phone.mp4", frames, fps=6, display_rotation=90), upright


@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
@pytest.mark.parametrize("resolution,resize,shape", [(None, "squash", (48, 32)), (16, "shortest", (24, 16)),
                                                     (16, "squash", (16, 16))])
def test_display_rotation_is_applied(rotated_video, backend, resolution, resize, shape):
    video, upright = rotated_video
    decoded = read_video(video, 3, resolution, resize, backend=backend)
    assert decoded.shape == (3, *shape, 3)
    expected = torch.nn.functional.interpolate(torch.as_tensor(upright[:3]).permute(0, 3, 1, 2).float(), size=shape,
                                               mode="area").permute(0, 2, 3, 1).numpy()
    assert np.abs(decoded.astype(np.float32) - expected).mean() < 12  # codec and resize differences only


def test_processor_output_follows_the_displayed_orientation(rotated_video):
    video, upright = rotated_video
    processor = StretchySnakeVideoProcessor(num_frames=2, resolution=16)
    pixel_values = processor(str(video))["pixel_values"]  # shortest side 16, centre crop of the 24 x 16 portrait
    bright = pixel_values[0, 0].mean(0) > 0  # above the mean colour: the white block
    rows, cols = torch.nonzero(bright, as_tuple=True)
    assert rows.float().mean() > 8 and cols.float().mean() < 8  # lower left, as shown upright
