"""Training from a stream of shards (`datasets.IterableDataset`): corpora larger than the disk.

Each process reads its own shards (whole shards where they divide by the processes, else every shard keeping every
N-th row: `datasets.distributed.split_dataset_by_node`'s strategies), each DataLoader worker its own share of those,
through a seeded shuffle buffer; a worker forms whole steps and decodes them at the step's scale, which every
process draws alike from the step's index (`ScaleSampler` is seeded by step). With W workers,
DataLoader takes batches from workers 0, 1, ..., W-1 in turn, so worker w forms steps w, w + W, w + 2W, ...; the
stream never ends by itself (pass after pass, reshuffled per pass), and `--max_steps` sets the run's length.

A resume starts at the checkpoint's step: each worker takes the role and shards of the worker that formed that step
and reads, without decoding, the rows of the steps before it: the same rows in the same steps at the same scales as
an unbroken run with the same processes and workers (a video that was unreadable before the checkpoint had another
row take its place then; a resume counts rows as if none had been).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..video_decoding import VideoDecodeError, video_name
from .data import ClipView, clips_per_step, collate_clips, decode_row
from .scales import ScaleSampler

logger = logging.getLogger(__name__)


@dataclass
class StreamedVideos:
    """A training split read as a stream, as `video_datasets` leaves it (`video`, `label`), with its decoding.

    `failures` counts the videos the stream's workers could not decode (they report them with each batch)."""

    rows: Any  # datasets.IterableDataset
    processor: Any
    decoder: str = "auto"
    shuffle_buffer_size: int = 1000
    max_replacements: int = 20
    failures: collections.Counter = field(default_factory=collections.Counter)


def shards_per_process(num_shards: int, num_replicas: int) -> int:
    """How many shards each process reads: whole shards where they divide evenly among the processes, else every
    shard (each process keeping every num_replicas-th row: split_dataset_by_node's 'examples' strategy)."""
    return num_shards // num_replicas if num_shards % num_replicas == 0 else num_shards


def usable_workers(requested: int, shards: int) -> int:
    """The most DataLoader workers, at most `requested`, that share a process's `shards` evenly: the stream is endless
    and workers form steps in turn, so a worker with fewer shards would go round its videos more often."""
    return max((w for w in range(1, min(requested, shards) + 1) if shards % w == 0), default=0) if requested else 0


class StreamedClipBatches(torch.utils.data.IterableDataset):
    """One training batch per step from a `StreamedVideos`: this process's share of the stream, decoded at the
    scale of each step; for `DataLoader(batch_size=None)`.

    Args:
        videos: the stream and its decoding.
        batch_size, scale_sampler, tokens_per_batch, max_batch_size: as `MultiScaleBatchSampler`.
        num_replicas, rank: the processes, and this one.
        seed: the shuffle buffer's seed (the same on every process).
        start_step: the first step to form (a resume); the rows of the steps before it are read, not decoded.
    """

    def __init__(self, videos: StreamedVideos, batch_size: int, scale_sampler: ScaleSampler, num_replicas: int = 1,
                 rank: int = 0, seed: int = 0, tokens_per_batch: int | None = None,
                 max_batch_size: int | None = None, start_step: int = 0):
        from datasets.distributed import split_dataset_by_node

        self.videos = videos
        self.batch_size = batch_size
        self.scale_sampler = scale_sampler
        self.tokens_per_batch = tokens_per_batch
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        shards = videos.rows.num_shards
        self.max_workers = shards_per_process(shards, num_replicas)
        self.rows = videos.rows
        if num_replicas > 1 and shards % num_replicas == 0:
            # whole shards, those whose index mod num_replicas is the rank: split_dataset_by_node's 'shards' strategy,
            # taken now; its deferred form would be applied after the workers' split (rows_of_role), to each worker's
            # part, and give processes unequal shares where a part's shards do not divide by the processes
            self.rows = videos.rows.shard(num_shards=num_replicas, index=rank, contiguous=False)
        elif num_replicas > 1:
            self.rows = split_dataset_by_node(videos.rows, rank=rank, world_size=num_replicas, strategy="examples")

    def clips(self, scale) -> int:
        return clips_per_step(scale, self.batch_size, self.tokens_per_batch, self.max_batch_size)

    def rows_of_role(self, role: int, workers: int, pass_index: int) -> Iterator[dict[str, Any]]:
        """One pass over the rows of worker role `role` of `workers` (its shards, shuffled for this pass)."""
        part = self.rows.shard(num_shards=workers, index=role, contiguous=False) if workers > 1 else self.rows
        if self.videos.shuffle_buffer_size > 1:
            part = part.shuffle(seed=self.seed, buffer_size=self.videos.shuffle_buffer_size)
        part.set_epoch(pass_index)
        # iter(batch_size=1), not iter(part): in a DataLoader worker, iterating an IterableDataset itself splits its
        # shards among the workers again, and the roles here are assigned already
        for batch in part.iter(batch_size=1):
            yield {key: values[0] for key, values in batch.items()}

    def endless_rows(self, role: int, workers: int) -> Iterator[dict[str, Any]]:
        pass_index = 0
        while True:
            read = 0
            for row in self.rows_of_role(role, workers, pass_index):
                read += 1
                yield row
            if read == 0:
                raise ValueError(f"the stream of process {self.rank}, worker role {role} of {workers}, holds no videos "
                                 f"(the split has {self.videos.rows.num_shards} shards): use fewer DataLoader workers "
                                 "or processes, or a split in more shards")
            pass_index += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        role = (self.start_step + worker) % workers  # this worker's first batch is step start_step + worker
        rows = self.endless_rows(role, workers)
        step = role
        while True:
            scale = self.scale_sampler.sample(step)
            wanted = self.clips(scale)
            if step < self.start_step:
                for _ in range(wanted):
                    next(rows)
            else:
                yield self.batch(rows, wanted, scale, step)
            step += workers

    def batch(self, rows: Iterator[dict[str, Any]], wanted: int, scale, step: int) -> dict[str, Any]:
        """`wanted` clips decoded at `scale`, the next rows of the stream taking the place of unreadable ones."""
        items, skipped = [], []
        while len(items) < wanted:
            row = next(rows)
            try:
                clip = decode_row(row, scale.frames, scale.resolution, True, ClipView(), self.videos.decoder)
            except VideoDecodeError as error:
                skipped.append(video_name(row["video"]))
                logger.warning("skipping unreadable video (%d in this step): %s", len(skipped), error)
                if len(skipped) > self.videos.max_replacements:
                    raise VideoDecodeError(f"{len(skipped)} videos in a row of the stream cannot be read, e.g. "
                                           f"{', '.join(skipped[:3])}; the last error: {error}") from None
                continue
            pixel_values = self.videos.processor.prepare_frames(clip, scale.resolution, training=True)
            items.append({"pixel_values": pixel_values, "labels": int(row["label"]), "patch_size": scale.patch_size,
                          "index": video_name(row["video"])})
        batch = collate_clips(items)
        batch["step"], batch["skipped"] = step, skipped
        return batch
