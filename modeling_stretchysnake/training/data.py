"""The training side's data: the multi-scale batch sampler, the clip dataset with its evaluation views, and the
collate. Decoding is the model side's (`video_decoding`).

A video that cannot be decoded raises `VideoDecodeError`; the dataset skips it, logs and counts it, and serves
another clip in its place so a batch keeps its size.
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..video_decoding import VideoDecodeError, read_video, video_name
from .scales import Scale, ScaleSampler

logger = logging.getLogger(__name__)


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


class DecodedClipCache:
    """Decoded clips (the decoder's uint8 frames, before normalisation) kept in memory, the least recently used
    dropped past `max_bytes`. Training decodes a clip at the step's scale, which no augmentation changes afterwards,
    so a video drawn again at a scale it was decoded at is served from here: the same frames without the decode.
    Worth it where the decoded clips fit in memory, as the generated data's do (about 1 GB for the main job's
    flexible model, 0.1 GB for its fixed-scale one); each DataLoader worker keeps its own."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._clips: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get(self, key: tuple):
        clip = self._clips.get(key)
        if clip is None:
            self.misses += 1
        else:
            self.hits += 1
            self._clips.move_to_end(key)
        return clip

    def put(self, key: tuple, clip) -> None:
        size = clip.nbytes
        if size > self.max_bytes:
            return
        self._clips[key] = clip
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.bytes -= self._clips.popitem(last=False)[1].nbytes


@dataclass
class ClipView:
    """Which view of a video to take in multi-view evaluation: temporal clip i of n (`sample_frame_indices`: the
    training stride, interleaved), spatial crop j of m along the longer side."""

    clip: int = 0
    num_clips: int = 1
    crop: int = 0
    num_crops: int = 1


def decode_row(row: dict[str, Any], frames: int, resolution: int, training: bool, view: ClipView,
               decoder: str = "auto"):
    """A dataset row's clip as the decoder's uint8 frames (T, H, W, 3): squashed to R x R for training, the shorter
    side at R for evaluation, of its start/end segment where it has one."""
    return read_video(
        row["video"], frames, resolution, "squash" if training else "shortest", row.get("start"), row.get("end"),
        row.get("time_unit") or "frames", decoder, clip=view.clip, num_clips=view.num_clips,
    )


class VideoClipDataset(torch.utils.data.Dataset):
    """Clips of the videos in a manifest, decoded at the scale the batch sampler asks for.

    Items are addressed as (index, frames, resolution, patch_size). A video that cannot be decoded is logged,
    counted in `failures`, and replaced by the next readable one, so one corrupt file never stops a run.

    Args:
        manifest: rows with `video` (a path, or {"path", "bytes"}: `video_datasets`), `label` (int) and optionally
            `start` / `end` / `time_unit`.
        processor: a StretchySnakeVideoProcessor (resizing, cropping, normalisation).
        training: squash-resize to R x R (flexible training) instead of shortest-side resize + centre crop.
        view: the evaluation view (temporal clip x spatial crop).
        decoder: 'auto' (decord then PyAV for 'squash' requests, PyAV then decord for 'shortest'; see
            `read_video`), 'decord', 'pyav' or 'torchcodec'.
        max_replacements: how many following videos to try in place of an unreadable one.
        clip_cache: a `DecodedClipCache` that keeps decoded clips for when the same video is asked for at the same
            scale and view again (shared with the dataset's copies, as the evaluation views are), or None.
    """

    def __init__(self, manifest, processor, training: bool = True, view: ClipView | None = None,
                 decoder: str = "auto", max_replacements: int = 20, clip_cache: DecodedClipCache | None = None):
        self.manifest = manifest
        self.processor = processor
        self.training = training
        self.view = view or ClipView()
        self.decoder = decoder
        self.max_replacements = max_replacements
        self.clip_cache = clip_cache
        self.failures: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self.manifest)

    def row(self, index: int) -> dict[str, Any]:
        return self.manifest[int(index)]

    def load(self, index: int, frames: int, resolution: int) -> torch.Tensor:
        """The view's clip of the video (or of its start/end segment): temporal view `view.clip` of
        `view.num_clips` (`sample_frame_indices`), spatial crop `view.crop` of `view.num_crops`."""
        view = self.view
        key = (int(index), frames, resolution, self.training, view.clip, view.num_clips)
        clip = self.clip_cache.get(key) if self.clip_cache is not None else None
        if clip is None:
            clip = decode_row(self.row(index), frames, resolution, self.training, view, self.decoder)
            if self.clip_cache is not None:
                self.clip_cache.put(key, clip)
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
                path = video_name(self.row(candidate)["video"])
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
