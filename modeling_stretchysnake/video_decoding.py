"""Video decoding at a requested scale: frame indices of a view (`sample_frame_indices`, the one rule for
training, evaluation, the processor and the pipeline) and `read_video`.

decord (`VideoReader(width=, height=)` + `get_batch` on the sampled indices) first, PyAV as the fallback when
decord is missing or fails, so a low-resolution request is cheap from the decoder on. Files that cannot be decoded
raise `VideoDecodeError`. Neither decoder is a hard requirement (`import_decoder`).

A video is a path, the file's bytes, or a `datasets.Video(decode=False)` value `{"path", "bytes"}` (a Hub dataset's
Parquet shards carry the bytes): bytes are decoded from memory, with no temporary file.
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DECODER_BACKENDS = ("auto", "decord", "pyav", "torchcodec")


class VideoDecodeError(RuntimeError):
    """A video file is missing, empty, truncated or otherwise unreadable."""


def sample_frame_indices(total_frames: int, num_frames: int, start: int = 0, end: int | None = None,
                         stride: int | None = None, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """The frame indices of temporal view `clip` of `num_clips` over [start, end): the one rule for training,
    evaluation, the processor and the pipeline.

    Uniform sampling (no `stride`): one view is `num_frames` indices spread over the segment with np.linspace (the
    training sampler), `stride` = (end - 1 - start) / (num_frames - 1) apart. Several views keep that stride and
    interleave: each training frame is the centre of a cell one stride wide, and view k of K takes offset
    (k + 1) / (K + 1) inside every cell (VideoMamba's sparse test sampling, on the training sampler's cells), so
    view k is the training frames shifted by stride x ((k + 1) / (K + 1) - 1/2); cells that reach past the segment
    take its first or last frame. A single frame's views spread over the segment.

    With `stride` (transformers' `frame_sampling_rate`): a window of frames `stride` apart; one view starts at the
    segment start, several are spaced evenly from its start to its end (VideoMAE's dense test sampling). A window
    longer than the segment repeats its last frame.

    Short videos repeat frames.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if stride is not None and (isinstance(stride, bool) or int(stride) != stride or stride < 1):
        raise ValueError(f"frame_sampling_rate must be an integer >= 1, got {stride!r}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"a temporal view is clip k of K with 0 <= k < K; got clip {clip} of {num_clips}")
    if end is not None and start is not None and end <= start:
        raise ValueError(f"the segment must end after it starts; got start={start}, end={end}")
    end = total_frames if end is None else min(int(end), total_frames)
    start = max(0, int(start or 0))
    if total_frames <= 0:
        raise VideoDecodeError("the video has no frames")
    if start >= end:
        raise VideoDecodeError(f"the segment [{start}, {end}) is past the end of a {total_frames}-frame video")
    last = end - 1
    if stride is not None:
        span = (num_frames - 1) * int(stride)
        first = start + (round(max(0, last - start - span) * clip / (num_clips - 1)) if num_clips > 1 else 0)
        return np.minimum(first + np.arange(num_frames, dtype=np.int64) * int(stride), last)
    if num_frames == 1:
        position = start + (last - start) * (clip / (num_clips - 1) if num_clips > 1 else 0.0)
        return np.array([round(position)], dtype=np.int64)
    spacing = (last - start) / (num_frames - 1)
    shift = spacing * ((clip + 1) / (num_clips + 1) - 0.5)
    positions = np.linspace(start, last, num_frames) + shift
    return np.clip(np.round(positions), start, last).astype(np.int64)


def segment_indices(times: np.ndarray, num_frames: int, start: float | None, end: float | None,
                    time_unit: str, stride: int | None = None, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """Sampled indices into a video's frames (temporal view `clip` of `num_clips`, `sample_frame_indices`), given
    every frame's presentation time in seconds (sorted).

    Seconds ranges select the frames whose timestamps fall in [start, end), so variable-frame-rate files map
    seconds to the right frames; frame ranges index the frames directly.
    """
    if time_unit == "seconds":
        if start is not None and end is not None and end <= start:
            raise ValueError(f"the segment must end after it starts; got start={start} s, end={end} s")
        first = int(np.searchsorted(times, start or 0.0, side="left"))
        last = len(times) if end is None else int(np.searchsorted(times, end, side="left"))
        if first >= len(times) or last <= first:
            duration = times[-1] if len(times) else 0.0
            raise VideoDecodeError(f"no frames in [{start or 0.0}, {end}) s of a video whose frames span "
                                   f"0-{duration:.2f} s")
        return sample_frame_indices(len(times), num_frames, first, last, stride, clip, num_clips)
    return sample_frame_indices(len(times), num_frames, None if start is None else int(start),
                                None if end is None else int(end), stride, clip, num_clips)


def _output_size(width: int, height: int, resolution: int | None, resize: str) -> tuple[int, int]:
    """(width, height) to decode at: R x R for 'squash', shorter side R for 'shortest', native for None."""
    if resolution is None:
        return width, height
    if resize == "squash":
        return resolution, resolution
    scale = resolution / min(width, height)  # shortest side -> resolution
    return max(resolution, round(width * scale)), max(resolution, round(height * scale))


def import_decoder(name: str):
    """Import an optional decoder module (decord or av) by name, so neither is a hard requirement of the code
    that `trust_remote_code` loads (transformers scans saved code files for import statements)."""
    return importlib.import_module(name)


class VideoSource:
    """What a decoder opens: a file path (or URL) or the file's bytes, with the name errors and logs give it."""

    def __init__(self, video):
        self.data, self.path = None, video
        if isinstance(video, dict):  # datasets.Video(decode=False): {"path": ..., "bytes": ...}, either may be None
            if video.get("bytes") is None and video.get("path") is None:
                raise VideoDecodeError("a video row with neither a path nor bytes")
            self.data, self.path = video.get("bytes"), video.get("path")
        elif isinstance(video, (bytes, bytearray, memoryview)):
            self.data, self.path = bytes(video), None
        self.name = str(self.path) if self.path is not None else f"<{len(self.data):,} bytes of video>"

    def open(self):
        """A new handle each call: decord and PyAV each read a handle to its end."""
        return io.BytesIO(self.data) if self.data is not None else str(self.path)

    def missing(self) -> bool:
        return self.data is None and "://" not in str(self.path) and not os.path.exists(self.path)

    def __str__(self) -> str:
        return self.name


def video_name(video) -> str:
    """How logs and errors name a video (a path, or a dataset row's path or byte count)."""
    return VideoSource(video).name


def _read_decord(path: VideoSource, resolution, resize, time_unit, sample):
    decord = import_decoder("decord")

    native, size = None, None  # size: (width, height) to decode at, None for the native size
    if resolution is not None and resize == "squash":  # the output size is known: no need to probe the frame size
        size = (resolution, resolution)
    elif resolution is not None:
        native = decord.VideoReader(path.open(), num_threads=1)
        height, width = native[0].shape[:2]
        size = _output_size(width, height, resolution, resize)
    reader = decord.VideoReader(path.open(), num_threads=1, **({"width": size[0], "height": size[1]} if size else {}))
    if time_unit == "seconds":
        times = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
        times = times - times[0]
    else:
        times = np.arange(len(reader), dtype=np.float64)
    indices = sample(times).tolist()
    try:
        frames = reader.get_batch(indices).asnumpy()
    except decord.DECORDError:
        frames = None
    if size is not None and (frames is None or frames.shape[1:] != (size[1], size[0], 3)):
        # decord's own resize garbles or refuses rotated (phone) videos, whose native frames it does turn upright:
        # decode those at full size and resize here.
        native = native or decord.VideoReader(path.open(), num_threads=1)
        frames = resize_frames(native.get_batch(indices).asnumpy(), size)
    return frames


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, height, width, 3) uint8 for size = (width, height): bilinear with antialias."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    video = F.interpolate(video, size=(size[1], size[0]), mode="bilinear", align_corners=False, antialias=True)
    return video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# Sampled frames further apart than this are reached by seeking to the keyframe before them instead of decoding
# every frame in between: long videos (Breakfast, COIN) cost per sampled frame, not per frame of the file.
SEEK_GAP_SECONDS = 2.0


def _read_pyav(path: VideoSource, resolution, resize, time_unit, sample):
    av = import_decoder("av")

    with av.open(path.open()) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path} has no video stream")
        stream = container.streams.video[0]
        # Every frame's presentation time from the packets alone (no decoding): the frame count and, for seconds
        # ranges, the true timestamps of variable-frame-rate files.
        pts = np.sort(np.array([packet.pts for packet in container.demux(stream) if packet.pts is not None],
                               dtype=np.int64))
        if len(pts) == 0:
            raise VideoDecodeError(f"{path} has no video frames")
        time_base = float(stream.time_base)
        indices = sample((pts - pts[0]) * time_base)
        targets = sorted(set(pts[indices].tolist()))
        seek_gap = SEEK_GAP_SECONDS / time_base
        kept, frame, frames, size = {}, None, None, None
        for target in targets:
            if frames is None or frame is None or target - frame.pts > seek_gap:
                container.seek(int(target), stream=stream, backward=True)
                frames, frame = container.decode(stream), None
            while frame is None or frame.pts is None or frame.pts < target:
                frame = next(frames, None)
                if frame is None:
                    break
            if frame is None:  # the stream ended early (a truncated file): stop at what was decoded
                break
            if size is None:
                size = _pyav_decode_size(frame, resolution, resize)
            kept[target] = _upright(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]), frame.rotation)
    if not kept:
        raise VideoDecodeError(f"{path}: no frame could be decoded")
    if len(kept) < len(targets):
        logger.warning("%s ends after %d of %d sampled frames (truncated?); repeating its last decoded frame",
                       path, len(kept), len(targets))
    last = kept[max(kept)]
    return np.stack([kept.get(t, last) for t in pts[indices].tolist()])


def _read_torchcodec(path: VideoSource, resolution, resize, time_unit, sample):
    """torchcodec's VideoDecoder (exact seek mode: every frame indexed by a scan of the file) decodes the sampled
    frames at full size; they are resized here as decord's fallback does. Frame-indexed requests only: a seconds
    range needs each frame's timestamp, which torchcodec does not list. The frames as stored: the torchcodec this was
    tested with (0.7) reports no display rotation, so a phone's portrait video stays on its side (decord and PyAV
    turn it upright)."""
    decoders = import_decoder("torchcodec.decoders")

    if time_unit == "seconds":
        raise VideoDecodeError("torchcodec serves frame-indexed segments; a seconds range needs decord or PyAV")
    source = path.data if path.data is not None else str(path.path)
    decoder = decoders.VideoDecoder(source, dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=1)
    metadata = decoder.metadata
    indices = sample(np.arange(metadata.num_frames, dtype=np.float64)).tolist()
    frames = decoder.get_frames_at(indices).data.numpy()
    if resolution is not None:
        height, width = frames.shape[1:3]
        size = _output_size(width, height, resolution, resize)
        if size != (width, height):
            frames = resize_frames(frames, size)
    return frames


def _quarter_turns(rotation) -> int:
    """Counter-clockwise quarter turns that show a frame upright, from its display-matrix rotation in degrees."""
    return round((rotation or 0) / 90) % 4


def _pyav_decode_size(frame, resolution: int | None, resize: str) -> tuple[int, int]:
    """(width, height) to convert a coded frame to, so that after its display rotation it has the output size."""
    turned = _quarter_turns(frame.rotation) % 2 == 1
    width, height = (frame.height, frame.width) if turned else (frame.width, frame.height)  # as displayed
    out_width, out_height = _output_size(width, height, resolution, resize)
    return (out_height, out_width) if turned else (out_width, out_height)


def _upright(image: np.ndarray, rotation) -> np.ndarray:
    """Apply a stream's display rotation (phone videos carry one), as players and decord do."""
    turns = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _decord_available() -> bool:
    try:
        import_decoder("decord")
    except Exception:
        return False
    return True


def _pyav_available() -> bool:
    try:
        import_decoder("av")
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _torchcodec_available() -> bool:
    """torchcodec imports and loads FFmpeg's libraries (its import fails without them, or without CUDA's for a
    CUDA build)."""
    try:
        import_decoder("torchcodec.decoders")
    except Exception:
        return False
    return True


def read_video(
    path,
    num_frames: int,
    resolution: int | None = None,
    resize: str = "squash",
    start: float | None = None,
    end: float | None = None,
    time_unit: str = "frames",
    backend: str = "auto",
    frame_sampling_rate: int | None = None,
    clip: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """Decode `num_frames` uniformly spaced RGB frames, (T, H, W, 3) uint8, already at the requested scale.

    path: a file path or URL, the file's bytes, or a `datasets.Video(decode=False)` value {"path", "bytes"}.

    resize: 'squash' decodes at resolution x resolution (flexible training); 'shortest' keeps the aspect ratio
    with the shorter side at `resolution` (evaluation, before a crop). start/end bound a segment, in frames or
    seconds. `frame_sampling_rate` takes frames that many apart instead of spreading them over the segment.
    `clip` of `num_clips` is the temporal view (`sample_frame_indices`). Raises VideoDecodeError for unreadable
    files.
    """
    if backend not in DECODER_BACKENDS:
        raise ValueError(f"decoder backend must be one of {DECODER_BACKENDS}, got {backend!r}")
    if resize not in ("squash", "shortest"):
        raise ValueError(f"resize must be 'squash' or 'shortest', got {resize!r}")
    if time_unit not in ("frames", "seconds"):
        raise ValueError(f"time_unit must be 'frames' or 'seconds', got {time_unit!r}")
    if num_frames < 1 or (resolution is not None and resolution < 1):
        raise ValueError(f"num_frames and resolution must be >= 1; got {num_frames} frames at {resolution} px")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"the segment must end after it starts; got start={start}, end={end} ({time_unit})")
    def sample(times: np.ndarray) -> np.ndarray:  # times: the frames' presentation times (seconds)
        return segment_indices(times, num_frames, start, end, time_unit, frame_sampling_rate, clip, num_clips)

    path = VideoSource(path)
    if path.missing():  # URLs go to the decoders as they are
        raise VideoDecodeError(f"cannot decode {path}: no such file")
    readers = []
    if backend in ("auto", "decord") and _decord_available():
        readers.append(_read_decord)
    if backend in ("auto", "pyav") and _pyav_available():
        readers.append(_read_pyav)
    if backend == "pyav" and not readers:
        raise ImportError(f"cannot decode {path}: PyAV is not installed (pip install av)")
    if backend == "torchcodec" and not _torchcodec_available():
        raise ImportError(f"cannot decode {path}: torchcodec does not import here (pip install torchcodec; it needs "
                          "FFmpeg's shared libraries)")
    if backend == "auto" and resize == "shortest":
        # measured (bench/decoding.py, bench/RESULTS.md): for aspect-keeping requests PyAV was 1.6-1.7x faster on
        # H.264 files and decord held 75-790 MB more (it opens the file twice, once at full size to learn its size);
        # for 'squash' the faster one depends on the codec (decord on short-GOP MPEG-4), and decord stays first
        readers.reverse()
    if backend in ("auto", "torchcodec") and _torchcodec_available():
        readers.append(_read_torchcodec)  # last in 'auto': for installs that have neither decord nor PyAV
    if not readers and backend == "auto":
        raise ImportError(f"cannot decode {path}: no video decoder is installed: pip install av (PyAV), or the "
                          "package's video extra, pip install 'stretchysnake[video]' (PyAV and decord)")
    if not readers:
        raise ImportError("decord is not installed; install the `video` extra or use backend='pyav'")
    errors = []
    for reader in readers:
        try:
            frames = reader(path, resolution, resize, time_unit, sample)
        except Exception as error:  # decoders raise many types for missing, empty or broken files
            errors.append(f"{reader.__name__[6:]}: {type(error).__name__}: {error}")
            continue
        if frames.ndim == 4 and frames.shape[0] == num_frames and frames.shape[-1] == 3:
            return frames
        errors.append(f"{reader.__name__[6:]}: decoded shape {frames.shape}")
    raise VideoDecodeError(f"cannot decode {path}: " + "; ".join(errors))
