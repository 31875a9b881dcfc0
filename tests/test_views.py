"""Multi-view evaluation keeps the training stride: temporal views interleave inside the training sampler's cells
(uniform sampling) or spread windows over the video (strided sampling), decoded through every path (decoders, the
dataset, the processor), and spatial crops sit along the longer side."""

import numpy as np
import pytest

from modeling_stretchysnake.video_decoding import read_video, sample_frame_indices
from modeling_stretchysnake.training.data import ClipView, VideoClipDataset
from modeling_stretchysnake.training.synthetic_actions import write_video
from modeling_stretchysnake.video_processing_stretchysnake import StretchySnakeVideoProcessor
from test_data import BACKENDS

FRAMES = 48  # frames of the indexed video


def index_frames(count: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Flat frames that carry their own index: red (index % 8) * 32, green (index // 8) * 32."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    for index in range(count):
        frames[index, ..., 0] = (index % 8) * 32
        frames[index, ..., 1] = (index // 8) * 32
    return frames


def read_indices(frames: np.ndarray) -> list[int]:
    """The indices the frames of `index_frames` carry, read back after encoding and decoding."""
    red, green = (np.round(frames[..., channel].reshape(len(frames), -1).mean(1) / 32).astype(int)
                  for channel in (0, 1))
    return (green * 8 + red).tolist()


@pytest.fixture(scope="module")
def indexed_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("views") / "indexed.mp4", index_frames(FRAMES), fps=12)


def spacing(indices) -> np.ndarray:
    return np.diff(np.asarray(indices))


@pytest.mark.parametrize("num_frames", [4, 8])
def test_temporal_views_keep_the_training_stride_and_interleave(num_frames):
    training = sample_frame_indices(FRAMES, num_frames)
    assert training.tolist() == np.linspace(0, FRAMES - 1, num_frames).round().astype(int).tolist()
    assert sample_frame_indices(FRAMES, num_frames, clip=0, num_clips=1).tolist() == training.tolist()
    for num_clips in (2, 4):
        views = np.stack([sample_frame_indices(FRAMES, num_frames, clip=k, num_clips=num_clips)
                          for k in range(num_clips)])
        # every view steps like the training frames (within rounding); a view's first or last frame may be pulled
        # onto the video's first or last frame, which shortens only that one step
        for view in views:
            assert (abs(spacing(view)[1:-1] - spacing(training)[1:-1]) <= 1).all(), view
            assert (spacing(view) <= spacing(training).max() + 1).all() and (spacing(view) > 0).all(), view
        # the views interleave: at every training frame they are ordered by view and all differ inside the video
        assert (np.diff(views, axis=0) >= 0).all(), views
        assert all(len(set(views[:, i])) == num_clips for i in range(1, num_frames - 1)), views
        # and cover the video's stride around each training frame, within half a stride of it
        assert (abs(views - training) <= spacing(training).max() / 2 + 0.5).all()


def test_strided_views_are_windows_spread_over_the_video():
    windows = [sample_frame_indices(100, 4, stride=5, clip=k, num_clips=3).tolist() for k in range(3)]
    assert windows == [[0, 5, 10, 15], [42, 47, 52, 57], [84, 89, 94, 99]]
    assert sample_frame_indices(100, 4, stride=5).tolist() == [0, 5, 10, 15]  # one view: from the start, as training
    assert sample_frame_indices(100, 4, start=60, end=80, stride=5, clip=1, num_clips=2).tolist() == [64, 69, 74, 79]
    assert sample_frame_indices(10, 4, stride=5, clip=1, num_clips=2).tolist() == [0, 5, 9, 9]  # longer than it


def test_views_respect_segments_and_reject_bad_requests():
    inside = sample_frame_indices(FRAMES, 4, start=10, end=30, clip=1, num_clips=2)
    assert inside.min() >= 10 and inside.max() <= 29
    assert sample_frame_indices(FRAMES, 1, clip=2, num_clips=3).tolist() == [FRAMES - 1]  # single frames spread
    with pytest.raises(ValueError, match="clip k of K"):
        sample_frame_indices(FRAMES, 4, clip=2, num_clips=2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("time_unit,segment", [("frames", (None, None)), ("frames", (6, 42)), ("seconds", (0.5, 3.5))])
def test_decoders_return_each_views_frames(indexed_video, backend, time_unit, segment):
    start, end = segment
    first, last = (0, FRAMES) if start is None else ((start, end) if time_unit == "frames" else (6, 42))
    for num_clips in (1, 2, 4):
        for clip in range(num_clips):
            frames = read_video(indexed_video, 8, None, start=start, end=end, time_unit=time_unit, backend=backend,
                                clip=clip, num_clips=num_clips)
            expected = sample_frame_indices(FRAMES, 8, first, last, clip=clip, num_clips=num_clips)
            assert read_indices(frames) == expected.tolist(), (num_clips, clip)


def test_dataset_processor_and_pipeline_path_take_the_same_views(indexed_video):
    processor = StretchySnakeVideoProcessor(num_frames=8, resolution=32)
    rows = [{"video": str(indexed_video), "label": 0}]
    array = index_frames(FRAMES)
    for clip in range(2):
        expected = sample_frame_indices(FRAMES, 8, clip=clip, num_clips=2).tolist()
        dataset = VideoClipDataset(rows, processor, training=False, view=ClipView(clip, 2, 0, 1))
        from_dataset = dataset[(0, 8, 32, 8)]["pixel_values"]
        from_file = processor(str(indexed_video), clip=clip, num_clips=2)["pixel_values"][0]
        from_array = processor(array, clip=clip, num_clips=2)["pixel_values"][0]
        assert read_indices(unnormalise(processor, from_array)) == expected
        assert read_indices(unnormalise(processor, from_file)) == expected
        assert read_indices(unnormalise(processor, from_dataset)) == expected


def unnormalise(processor, pixel_values) -> np.ndarray:
    """(T, 3, R, R) normalised -> (T, R, R, 3) in 0..255."""
    mean = np.array(processor.image_mean)[None, :, None, None]
    std = np.array(processor.image_std)[None, :, None, None]
    return ((pixel_values.numpy() * std + mean) * 255).transpose(0, 2, 3, 1)


def test_crops_sit_along_the_longer_side():
    """A 32 x 96 video whose columns carry their x: three 32-px crops start at x = 0, 32 and 64; a tall video's
    crops move down."""
    processor = StretchySnakeVideoProcessor(num_frames=2, resolution=32)
    wide = np.broadcast_to(np.arange(96, dtype=np.uint8)[None, None, :, None] * 2, (2, 32, 96, 3)).copy()
    starts = []
    for crop in range(3):
        pixels = unnormalise(processor, processor(wide, crop=crop, num_crops=3)["pixel_values"][0])
        starts.append(int(round(pixels[0, 0, 0, 0] / 2)))
    assert starts == [0, 32, 64]
    centre = unnormalise(processor, processor(wide)["pixel_values"][0])
    assert round(centre[0, 0, 0, 0] / 2) == 32  # one crop: the centre
    tall = np.ascontiguousarray(wide.transpose(0, 2, 1, 3))
    bottom = unnormalise(processor, processor(tall, crop=2, num_crops=3)["pixel_values"][0])
    assert round(bottom[0, 0, 0, 0] / 2) == 64
    with pytest.raises(ValueError, match="crop k of K"):
        processor(wide, crop=3, num_crops=3)
