import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_stretchysnake.training.data import (
    ClipView,
    DecodedClipCache,
    FixedScaleBatchSampler,
    MultiScaleBatchSampler,
    VideoClipDataset,
    collate_clips,
)
from modeling_stretchysnake.training.scales import Scale, ScaleSampler
from modeling_stretchysnake.training.synthetic_actions import ACTIONS, generate_action_dataset, render_action, write_video
from modeling_stretchysnake.video_decoding import VideoDecodeError, read_video, sample_frame_indices
from modeling_stretchysnake.video_processing_stretchysnake import StretchySnakeVideoProcessor

try:
    import decord  # noqa: F401

    HAVE_DECORD = True
except ImportError:  # decord has no wheels for some platforms: PyAV is the fallback
    HAVE_DECORD = False
BACKENDS = ["pyav", pytest.param("decord", marks=pytest.mark.skipif(not HAVE_DECORD, reason="decord not installed"))]


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    """20 frames whose brightness encodes the frame index (index * 12), 48 x 64."""
    frames = np.stack([np.full((48, 64, 3), i * 12, np.uint8) for i in range(20)])
    return write_video(tmp_path_factory.mktemp("videos") / "ramp.mp4", frames, fps=10)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_action_dataset(tmp_path_factory.mktemp("synthetic"), {"train": 2, "test": 1}, num_frames=12, size=48)


def brightness_index(frames):
    return np.round(frames.reshape(len(frames), -1).mean(1) / 12).astype(int)


def test_sample_frame_indices_uniform_and_repeating():
    assert sample_frame_indices(100, 5).tolist() == [0, 25, 50, 74, 99]
    assert sample_frame_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices(100, 3, start=10, end=20).tolist() == [10, 14, 19]
    with pytest.raises(VideoDecodeError):
        sample_frame_indices(0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_video_samples_and_resizes(ramp_video, backend):
    frames = read_video(ramp_video, 4, resolution=32, resize="squash", backend=backend)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    assert brightness_index(frames).tolist() == [0, 6, 13, 19]
    shortest = read_video(ramp_video, 2, resolution=24, resize="shortest", backend=backend)
    assert shortest.shape == (2, 24, 32, 3)
    native = read_video(ramp_video, 3, backend=backend)
    assert native.shape == (3, 48, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_video_segments_in_frames_and_seconds(ramp_video, backend):
    assert brightness_index(read_video(ramp_video, 3, start=4, end=9, backend=backend)).tolist() == [4, 6, 8]
    assert brightness_index(read_video(ramp_video, 2, start=1.0, end=1.5, time_unit="seconds", backend=backend)).tolist() == [10, 14]


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_video_decodes_bytes_from_memory(ramp_video, backend):
    """A file's bytes, or a datasets.Video(decode=False) value {"path", "bytes"}: the same frames as the file."""
    data = ramp_video.read_bytes()
    expected = read_video(ramp_video, 4, resolution=32, resize="shortest", start=2, backend=backend)
    for video in (data, {"path": "elsewhere.mp4", "bytes": data}, {"path": str(ramp_video), "bytes": None}):
        frames = read_video(video, 4, resolution=32, resize="shortest", start=2, backend=backend)
        assert np.array_equal(frames, expected)
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32, decoder=backend)
    assert torch.equal(processor({"path": "x.mp4", "bytes": data})["pixel_values"],
                       processor(str(ramp_video))["pixel_values"])
    with pytest.raises(VideoDecodeError, match="cannot decode broken.mp4: "):
        read_video({"path": "broken.mp4", "bytes": data[:300]}, 4, backend=backend)


def test_torchcodec_takes_the_frames_decord_and_pyav_take(ramp_video):
    """Every temporal view, both resize modes, from the file and from its bytes: the same frame indices (the ramp's
    brightness is the frame's index) and pixels within a few levels of PyAV's (and decord's)."""
    from modeling_stretchysnake.video_decoding import _torchcodec_available

    if not _torchcodec_available():
        pytest.skip("torchcodec does not import here (its PyPI wheels need CUDA's libraries; a CPU build needs "
                    "FFmpeg's shared libraries)")
    others = ["pyav"] + (["decord"] if HAVE_DECORD else [])
    for resize in ("squash", "shortest"):
        for clip in range(3):
            request = dict(num_frames=5, resolution=24, resize=resize, clip=clip, num_clips=3)
            frames = read_video(ramp_video, backend="torchcodec", **request)
            assert np.array_equal(read_video(ramp_video.read_bytes(), backend="torchcodec", **request), frames)
            for other in others:
                expected = read_video(ramp_video, backend=other, **request)
                assert frames.shape == expected.shape
                assert brightness_index(frames).tolist() == brightness_index(expected).tolist()
                assert np.abs(frames.astype(np.float32) - expected).mean() < 3
    with pytest.raises(VideoDecodeError, match="torchcodec serves frame-indexed segments"):
        read_video(ramp_video, 2, start=0.5, end=1.5, time_unit="seconds", backend="torchcodec")


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50, None])
def test_unreadable_files_raise_decode_error(tmp_path, ramp_video, content):
    path = tmp_path / "broken.mp4"
    if content is None:  # truncated: the first 300 bytes of a real file
        path.write_bytes(ramp_video.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="cannot decode"):
        read_video(path, 4, resolution=32)
    with pytest.raises(VideoDecodeError):
        read_video(tmp_path / "missing.mp4", 4)


def test_read_video_validates_arguments(ramp_video):
    for kwargs, match in ((dict(resize="crop"), "resize"), (dict(time_unit="ms"), "time_unit"), (dict(backend="x"), "backend")):
        with pytest.raises(ValueError, match=match):
            read_video(ramp_video, 2, resolution=16, **kwargs)


def test_rendered_actions_need_motion():
    rng = np.random.default_rng(0)
    clip = render_action("move_right", num_frames=6, size=48, rng=rng)
    bright = clip.max(-1) > 125
    columns = [np.nonzero(bright[t])[1].mean() for t in range(6)]
    assert all(a < b for a, b in zip(columns, columns[1:]))
    still = render_action("stay_still", num_frames=6, size=48, rng=rng).max(-1) > 125
    assert (still[0] == still[-1]).all()


def test_render_options_set_noise_square_size_and_travel():
    rng = np.random.default_rng(0)
    quiet = render_action("move_down", num_frames=5, size=48, rng=rng, noise=0, side_range=(0.25, 0.27), min_travel=0.5)
    bright = quiet.max(-1) > 125
    rows = [np.nonzero(bright[t])[0] for t in range(5)]
    assert all(r.max() - r.min() + 1 == 12 for r in rows)  # side = 0.25 * 48
    assert rows[-1].min() - rows[0].min() >= 24  # travelled at least half the frame
    background = quiet[0][~bright[0]]
    assert (background == background[0]).all()  # no noise: one background colour


def test_generated_manifest(manifest):
    train = manifest["train"]
    assert len(train) == 2 * len(ACTIONS) and len(manifest["test"]) == len(ACTIONS)
    assert train.features["label"].names == list(ACTIONS)
    assert sorted(set(train["label_name"])) == sorted(ACTIONS)


def test_multiscale_batches_share_a_scale_and_ranks_agree():
    sampler = ScaleSampler("static_tokens", frames=(2, 4), resolutions=(28, 56), seed=1)
    ranks = [MultiScaleBatchSampler(20, 3, sampler, num_replicas=2, rank=r, seed=5) for r in range(2)]
    epochs = [[list(iter(r)) for _ in range(2)] for r in ranks]  # two epochs per rank
    assert len(ranks[0]) == 3 and all(len(e) == 3 for e in epochs[0])
    for epoch in range(2):
        for step, (batch0, batch1) in enumerate(zip(epochs[0][epoch], epochs[1][epoch])):
            scales = {item[1:] for item in batch0 + batch1}
            assert len(scales) == 1  # one scale for the whole step, on both ranks
            expected = sampler.sample(epoch * 3 + step)
            assert scales == {(expected.frames, expected.resolution, expected.patch_size)}
            assert not {i[0] for i in batch0} & {i[0] for i in batch1}  # disjoint items
    assert [i[0] for b in epochs[0][0] for i in b] != [i[0] for b in epochs[0][1] for i in b]  # reshuffled
    with pytest.raises(ValueError, match="cannot fill"):
        MultiScaleBatchSampler(5, 3, sampler, num_replicas=2)


def test_fixed_scale_sampler_covers_every_item_with_equal_batches_per_rank():
    scale = Scale(4, 56, 4)
    ranks = [list(FixedScaleBatchSampler(10, 2, scale, 3, r)) for r in range(3)]
    assert [len(batches) for batches in ranks] == [2, 2, 2]  # 4 items each: under FSDP every forward is collective
    seen = [i for batches in ranks for batch in batches for i, *_ in batch]
    assert len(seen) == 12 and set(seen) == set(range(10))  # 10 items, 2 repeated to even the ranks out
    assert [i for batch in ranks[2] for i, *_ in batch] == [2, 5, 8, 1]
    assert [i for batch in FixedScaleBatchSampler(10, 4, scale) for i, *_ in batch] == list(range(10))  # 1 process


def test_dataset_decodes_at_the_requested_scale(manifest):
    dataset = VideoClipDataset(manifest["train"], StretchySnakeVideoProcessor(), training=True)
    batch = collate_clips([dataset[(i, 4, 28, 2)] for i in (0, 5)])
    assert batch["pixel_values"].shape == (2, 4, 3, 28, 28)
    assert batch["labels"].tolist() == [0, 2] and batch["patch_size"] == 2
    with pytest.raises(ValueError, match="mixes patch sizes"):
        collate_clips([dataset[(0, 2, 28, 2)], dataset[(1, 2, 28, 4)]])


def test_decoded_clips_are_served_from_memory_at_the_same_scale_and_view(manifest, monkeypatch):
    """A video asked for again at a scale (and, in evaluation, a view) it was decoded at comes from the cache: the
    same pixels, no decode; another scale, view or mode decodes; past the byte budget the least recent clip goes."""
    from modeling_stretchysnake.training import data

    decodes = []
    real_read = data.read_video
    monkeypatch.setattr(data, "read_video", lambda *args, **kwargs: decodes.append(args[1:3]) or real_read(*args,
                                                                                                        **kwargs))
    cache = DecodedClipCache(max_bytes=2**20)
    train = VideoClipDataset(manifest["train"], StretchySnakeVideoProcessor(), training=True, clip_cache=cache)
    uncached = VideoClipDataset(manifest["train"], StretchySnakeVideoProcessor(), training=True)
    first = train[(0, 4, 28, 2)]["pixel_values"]
    assert len(decodes) == 1 and torch.equal(train[(0, 4, 28, 2)]["pixel_values"], first)
    assert len(decodes) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(uncached[(0, 4, 28, 2)]["pixel_values"], first)  # what a decode gives
    train[(0, 2, 28, 2)], train[(0, 4, 32, 2)]  # other frames, another resolution: decoded
    evaluation = VideoClipDataset(manifest["train"], StretchySnakeVideoProcessor(), training=False, clip_cache=cache,
                                  view=ClipView(1, 2))
    evaluation[(0, 4, 28, 2)]  # evaluation's resize and view: decoded
    assert len(decodes) == 5 and len(cache._clips) == 4

    small = DecodedClipCache(max_bytes=2 * 4 * 28 * 28 * 3)  # two clips of 4 frames at 28 px
    train.clip_cache = small
    for index in (0, 1, 0, 2):  # 0 is used again before 2 arrives: 1 is the least recent and goes
        train[(index, 4, 28, 2)]
    assert set(small._clips) == {(0, 4, 28, True, 0, 1), (2, 4, 28, True, 0, 1)} and small.bytes <= small.max_bytes


def test_multi_view_evaluation_takes_different_clips_and_crops(tmp_path):
    frames = np.stack([np.full((32, 64, 3), i * 12, np.uint8) for i in range(20)])
    frames[:, :, :32] = 0  # left half dark
    path = write_video(tmp_path / "wide.mp4", frames)
    rows = [{"video": str(path), "label": 0}]
    views = {}
    for clip in range(2):
        for crop in range(2):
            dataset = VideoClipDataset(rows, StretchySnakeVideoProcessor(), training=False, view=ClipView(clip, 2, crop, 2))
            views[clip, crop] = dataset[(0, 3, 32, 8)]["pixel_values"]
    assert views[0, 0].mean() < views[0, 1].mean()  # left crop darker than right crop
    assert views[0, 1].mean() < views[1, 1].mean()  # the second temporal view is a little later: brighter


def test_corrupt_videos_are_skipped_counted_and_replaced(manifest, tmp_path, caplog):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    rows = [dict(manifest["train"][0]), {"video": str(broken), "label": 3}, dict(manifest["train"][5])]
    dataset = VideoClipDataset(rows, StretchySnakeVideoProcessor(), training=True)
    item = dataset[(1, 2, 28, 2)]
    assert item["index"] == 2 and item["labels"] == rows[2]["label"]
    assert dataset.failures == {str(broken): 1}
    assert "skipping unreadable video" in caplog.text
    all_broken = VideoClipDataset([{"video": str(broken), "label": 0}] * 3, StretchySnakeVideoProcessor(), max_replacements=2)
    with pytest.raises(VideoDecodeError, match="none of the 3 videos tried from index 0 \\(of 3\\)"):
        all_broken[(0, 2, 28, 2)]
    # more replacements allowed than there are videos: each is tried once, and the message counts agree
    two = VideoClipDataset([{"video": str(broken), "label": 0}, {"video": str(broken) + "x", "label": 1}],
                           StretchySnakeVideoProcessor(), max_replacements=20)
    with pytest.raises(VideoDecodeError, match="none of the 2 videos tried from index 1 \\(of 2\\)") as caught:
        two[(1, 2, 28, 2)]
    assert f"{broken}x, {broken};" in str(caught.value)


def test_frame_sampling_rate_takes_frames_that_far_apart_from_the_start():
    assert sample_frame_indices(100, 4, stride=3).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(100, 4, start=10, end=17, stride=3).tolist() == [10, 13, 16, 16]  # segment ends
    with pytest.raises(ValueError, match="frame_sampling_rate"):
        sample_frame_indices(100, 4, stride=0)


def test_load_or_generate_renders_once_per_setting(tmp_path):
    from modeling_stretchysnake.training.synthetic_actions import load_or_generate

    counts = {"train": 1, "test": 1}
    first = load_or_generate(tmp_path, counts, task="clear", num_frames=4, size=32)
    video = Path(first["train"][0]["video"])
    stamp = video.stat().st_mtime_ns
    again = load_or_generate(tmp_path, counts, task="clear", num_frames=4, size=32)
    assert again["train"]["video"] == first["train"]["video"] and video.stat().st_mtime_ns == stamp  # reused
    load_or_generate(tmp_path, counts, task="noisy", num_frames=4, size=32)  # other settings: rendered again
    assert video.stat().st_mtime_ns != stamp
    assert json.loads((tmp_path / "generation.json").read_text())["render_options"]["noise"] == 20


def test_token_budget_batches_follow_the_scale_and_ranks_agree():
    from modeling_stretchysnake.training.data import clips_per_step

    assert clips_per_step(Scale(8, 56, 14), 8) == 8  # no budget: the fixed batch
    assert [clips_per_step(Scale(f, 56, 14), 8, 1024) for f in (4, 8, 16)] == [16, 8, 4]  # 64, 128, 256 tokens
    assert clips_per_step(Scale(2, 56, 14), 8, 1024, max_batch_size=12) == 12  # capped
    assert clips_per_step(Scale(16, 112, 7), 8, 1024) == 1  # at least one clip

    sampler = ScaleSampler("static_tokens", frames=(2, 4, 8), resolutions=(28, 56), grid=4, seed=3)
    ranks = [MultiScaleBatchSampler(100, 4, sampler, num_replicas=2, rank=r, seed=5, tokens_per_batch=128,
                                    max_batch_size=8) for r in range(2)]
    mean = sum(p * clips_per_step(scale, 4, 128, 8) for scale, p in sampler.distribution())
    assert len(ranks[0]) == round(100 / (2 * mean))  # the epoch covers the clips once at the expected batch
    epochs = [[list(iter(r)) for _ in range(2)] for r in ranks]
    for epoch in range(2):
        clips_seen = []
        for step, (batch0, batch1) in enumerate(zip(epochs[0][epoch], epochs[1][epoch])):
            scale = sampler.sample(epoch * len(ranks[0]) + step)
            assert {item[1:] for item in batch0 + batch1} == {(scale.frames, scale.resolution, scale.patch_size)}
            assert len(batch0) == len(batch1) == clips_per_step(scale, 4, 128, 8)
            assert not {i[0] for i in batch0} & {i[0] for i in batch1}
            clips_seen += [i[0] for i in batch0 + batch1]
        assert 0.6 * 100 < len(clips_seen) < 1.6 * 100 and len(set(clips_seen)) > 0.6 * 100
    assert len({len(b) for b in epochs[0][0]}) > 1
    again = MultiScaleBatchSampler(100, 4, sampler, num_replicas=2, rank=0, seed=5, tokens_per_batch=128,
                                   max_batch_size=8)
    again.set_epoch(1)
    assert list(again) == epochs[0][1]  # a resumed run rebuilds the same epoch


@pytest.mark.parametrize("resize,first", [("squash", "decord"), ("shortest", "pyav")])
def test_auto_decoder_order_follows_the_request(monkeypatch, tmp_path, resize, first):
    """'auto' tries the decoder measured faster for the request first (bench/decoding.py) and falls back on the
    other."""
    from modeling_stretchysnake import video_decoding as decoding

    calls = []

    def recorder(name, fail):
        def read(*args):
            calls.append(name)
            if fail:
                raise RuntimeError(f"{name} cannot")
            return np.zeros((2, 8, 8, 3), dtype=np.uint8)
        return read

    monkeypatch.setattr(decoding, "_decord_available", lambda: True)
    monkeypatch.setattr(decoding, "_read_decord", recorder("decord", fail=first == "decord"))
    monkeypatch.setattr(decoding, "_read_pyav", recorder("pyav", fail=first == "pyav"))
    (tmp_path / "clip.mp4").write_bytes(b"")  # the readers are stand-ins; the file must exist
    decoding.read_video(tmp_path / "clip.mp4", 2, 8, resize)
    assert calls == [first, {"decord": "pyav", "pyav": "decord"}[first]]
