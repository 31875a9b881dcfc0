"""Video decoding at a requested scale, the multi-scale batch sampler, the clip dataset and its collate.

Decoding uses decord (`VideoReader(width=, height=)` + `get_batch` on the sampled indices) and falls back to
PyAV when decord is missing or fails, so a low-resolution step is cheap from the decoder on. Files that cannot
be decoded raise `VideoDecodeError`; the dataset skips them, logs and counts them, and serves another clip in
their place so a batch keeps its size.
"""

from __future__ import annotations

import collections
import importlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .scales import Scale, ScaleSampler

logger = logging.getLogger(__name__)

DECODER_BACKENDS = ("auto", "decord", "pyav")


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


def _read_decord(path, resolution, resize, time_unit, sample):
    decord = import_decoder("decord")

    native, size = None, None  # size: (width, height) to decode at, None for the native size
    if resolution is not None and resize == "squash":  # the output size is known: no need to probe the frame size
        size = (resolution, resolution)
    elif resolution is not None:
        native = decord.VideoReader(str(path), num_threads=1)
        height, width = native[0].shape[:2]
        size = _output_size(width, height, resolution, resize)
    reader = decord.VideoReader(str(path), num_threads=1, **({"width": size[0], "height": size[1]} if size else {}))
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
        native = native or decord.VideoReader(str(path), num_threads=1)
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


def _read_pyav(path, resolution, resize, time_unit, sample):
    av = import_decoder("av")

    with av.open(str(path)) as container:
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

    readers = []
    if backend in ("auto", "decord") and _decord_available():
        readers.append(_read_decord)
    if backend in ("auto", "pyav"):
        readers.append(_read_pyav)
    if backend == "auto" and resize == "shortest":
        # measured (bench/decoding.py, bench/RESULTS.md): for aspect-keeping requests PyAV was 1.6-1.7x faster on
        # H.264 files and decord held 75-790 MB more (it opens the file twice, once at full size to learn its size);
        # for 'squash' the faster one depends on the codec (decord on short-GOP MPEG-4), and decord stays first
        readers.reverse()
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


def clips_per_step(scale: Scale, batch_size: int, tokens_per_batch: int | None = None,
                   max_batch_size: int | None = None) -> int:
    """Clips a process takes in a step at `scale`: `batch_size`, or with a token budget the number of clips whose
    tokens (frames x grid cells each) come closest to `tokens_per_batch`: at least 1, at most `max_batch_size`."""
    if tokens_per_batch is None:
        return batch_size
    clips = max(1, round(tokens_per_batch / scale.tokens))
    return min(clips, max_batch_size) if max_batch_size else clips


class MultiScaleBatchSampler(torch.utils.data.Sampler):
    """Yields one batch per step, every item tagged with the step's scale: [(index, frames, resolution, patch)].

    All ranks draw the same scale for the same step (ScaleSampler is seeded by step) and disjoint items: each
    step takes `clips x num_replicas` items of an epoch-seeded permutation, this rank's slice of them.

    With `tokens_per_batch` (token-budget batching, as Multigrid), a step's clips per process follow its scale:
    `clips_per_step` (inversely proportional to the tokens of a clip, capped by `max_batch_size`), the same on
    every rank since the scale is. An epoch keeps a fixed number of steps, those that cover the `num_samples`
    clips once at the expected clips per step of the scale distribution (so Trainer's epoch and resume arithmetic
    hold); a step that draws past the end of the epoch's permutation continues into another one.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        scale_sampler: ScaleSampler,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        tokens_per_batch: int | None = None,
        max_batch_size: int | None = None,
    ):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.scale_sampler = scale_sampler
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.tokens_per_batch = tokens_per_batch
        self.max_batch_size = max_batch_size
        self.epoch = 0
        largest = max(self.clips(scale) for scale, _ in scale_sampler.distribution())
        if num_samples < largest * num_replicas:
            raise ValueError(
                f"{num_samples} samples cannot fill one step of {largest} per process x {num_replicas} processes"
            )
        self.mean_clips = sum(p * self.clips(scale) for scale, p in scale_sampler.distribution())

    def clips(self, scale: Scale) -> int:
        return clips_per_step(scale, self.batch_size, self.tokens_per_batch, self.max_batch_size)

    def __len__(self) -> int:
        if self.tokens_per_batch is None:
            return self.num_samples // (self.batch_size * self.num_replicas)
        return max(1, round(self.num_samples / (self.mean_clips * self.num_replicas)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, round_: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch + round_ * 1_000_003)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        order, first = self._order(0), 0
        for step in range(len(self)):
            scale = self.scale_sampler.sample(self.epoch * len(self) + step)
            clips = self.clips(scale)
            while first + clips * self.num_replicas > len(order):  # only with a token budget
                order += self._order(len(order) // self.num_samples)
            mine = order[first + self.rank * clips : first + (self.rank + 1) * clips]
            first += clips * self.num_replicas
            yield [(index, scale.frames, scale.resolution, scale.patch_size) for index in mine]
        self.epoch += 1


class FixedScaleBatchSampler(torch.utils.data.Sampler):
    """Evaluation batches at one scale over this rank's share of the items (rank::num_replicas).

    Every rank gets the same number of items, as DistributedSampler does: a rank short of the others repeats items
    from the start, so all ranks run the same number of forward passes (under FSDP each one is collective). Callers
    count each item once (`index`)."""

    def __init__(self, num_samples: int, batch_size: int, scale: Scale, num_replicas: int = 1, rank: int = 0):
        per_rank = math.ceil(num_samples / num_replicas)
        self.indices = [i % num_samples for i in range(rank, per_rank * num_replicas, num_replicas)]
        self.batch_size = batch_size
        self.scale = scale

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        s = self.scale
        for first in range(0, len(self.indices), self.batch_size):
            yield [(i, s.frames, s.resolution, s.patch_size) for i in self.indices[first : first + self.batch_size]]


@dataclass
class ClipView:
    """Which view of a video to take in multi-view evaluation: temporal clip i of n (`sample_frame_indices`: the
    training stride, interleaved), spatial crop j of m along the longer side."""

    clip: int = 0
    num_clips: int = 1
    crop: int = 0
    num_crops: int = 1


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of the videos in a manifest, decoded at the scale the batch sampler asks for.

    Items are addressed as (index, frames, resolution, patch_size). A video that cannot be decoded is logged,
    counted in `failures`, and replaced by the next readable one, so one corrupt file never stops a run.

    Args:
        manifest: rows with `video` (path), `label` (int) and optionally `start` / `end` / `time_unit`.
        processor: a StretchySnakeVideoProcessor (resizing, cropping, normalisation).
        training: squash-resize to R x R (flexible training) instead of shortest-side resize + centre crop.
        view: the evaluation view (temporal clip x spatial crop).
        decoder: 'auto' (decord then PyAV for 'squash' requests, PyAV then decord for 'shortest'; see
            `read_video`), 'decord' or 'pyav'.
        max_replacements: how many following videos to try in place of an unreadable one.
    """

    def __init__(self, manifest, processor, training: bool = True, view: ClipView | None = None,
                 decoder: str = "auto", max_replacements: int = 20):
        self.manifest = manifest
        self.processor = processor
        self.training = training
        self.view = view or ClipView()
        self.decoder = decoder
        self.max_replacements = max_replacements
        self.failures: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self.manifest)

    def row(self, index: int) -> dict[str, Any]:
        return self.manifest[int(index)]

    def load(self, index: int, frames: int, resolution: int) -> torch.Tensor:
        """The view's clip of the video (or of its start/end segment): temporal view `view.clip` of
        `view.num_clips` (`sample_frame_indices`), spatial crop `view.crop` of `view.num_crops`."""
        row = self.row(index)
        view = self.view
        clip = read_video(
            row["video"], frames, resolution, "squash" if self.training else "shortest", row.get("start"),
            row.get("end"), row.get("time_unit") or "frames", self.decoder, clip=view.clip, num_clips=view.num_clips,
        )
        return self.processor.prepare_frames(
            clip, resolution, training=self.training, crop=view.crop, num_crops=view.num_crops
        )

    def __getitem__(self, key) -> dict[str, Any]:
        index, frames, resolution, patch_size = key
        error, tried = None, []
        for attempt in range(min(self.max_replacements + 1, len(self))):  # each file at most once
            candidate = (index + attempt) % len(self)
            try:
                pixel_values = self.load(candidate, frames, resolution)
            except VideoDecodeError as decode_error:
                error = decode_error
                path = str(self.row(candidate)["video"])
                tried.append(path)
                self.failures[path] += 1
                logger.warning("skipping unreadable video (%d skipped so far): %s", len(self.failures), error)
                continue
            return {"pixel_values": pixel_values, "labels": int(self.row(candidate)["label"]),
                    "patch_size": patch_size, "index": candidate}
        shown = ", ".join(tried[:3]) + (f" and {len(tried) - 3} more" if len(tried) > 3 else "")
        raise VideoDecodeError(
            f"none of the {len(tried)} videos tried from index {index} (of {len(self)}) can be read: {shown}; the "
            f"last error: {error}. Check the manifest's paths and that a decoder (decord or PyAV) can read these files"
        )


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack one step's clips: pixel_values (B, T, C, R, R), labels (B,), the step's patch size, and the manifest
    index each clip came from (it differs from the requested one where an unreadable video was replaced)."""
    patch_sizes = {item["patch_size"] for item in items}
    if len(patch_sizes) != 1:
        raise ValueError(f"a batch mixes patch sizes {patch_sizes}; all items of a step share one scale")
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "labels": torch.tensor([item["labels"] for item in items], dtype=torch.long),
        "patch_size": patch_sizes.pop(),
        "index": [item["index"] for item in items],
    }
