"""Clips per second into training from the three forms a dataset takes: video files on disk (a manifest of paths),
local Parquet shards with the videos' bytes inside (`load_dataset("parquet")`, map-style), and the same shards
streamed (`--streaming`: `StreamedClipBatches`, a seeded shuffle buffer).

    python bench/data_sources.py                        # the main job's data, scales and batch; 0 and 2 workers
    python bench/data_sources.py --steps 60 --rounds 5 --workers 0

The same videos (the main job's generated training split, written once as --shards Parquet shards under
--data_root), the same decoder and the same scale sampler (the main job's: static tokens, 4 or 8 frames at 56, 84 or
112 px, batch 8) for each source. A round times each source in turn (round-robin, so a busy machine slows them
alike): the wall time of --steps batches after the first (the DataLoader's start and its workers' warm-up are
left out). Prints clips per second per source and worker count (median over rounds), and each source's ratio to the
files' rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCES = ("files", "parquet", "stream")


def write_shards(manifest, folder: Path, shards: int) -> list[str]:
    """The training split as Parquet shards whose `video` column (a datasets.Video feature) holds each file's
    bytes, as a Hub dataset's shards do; written once."""
    from datasets import ClassLabel, Dataset, Features, Video

    paths = [folder / f"train-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    if all(path.exists() for path in paths):
        return [str(path) for path in paths]
    folder.mkdir(parents=True, exist_ok=True)
    names = manifest.features["label"].names
    videos = [{"path": Path(path).name, "bytes": Path(path).read_bytes()} for path in manifest["video"]]
    table = Dataset.from_dict({"video": videos, "label": manifest["label"]},
                              features=Features({"video": Video(), "label": ClassLabel(names=names)}))
    for index, path in enumerate(paths):
        table.shard(shards, index, contiguous=True).to_parquet(str(path))
    return [str(path) for path in paths]


def loaders(args, manifest_dir: Path, shard_paths: list[str], workers: int):
    """{source: a DataLoader of training batches}."""
    import torch

    from modeling_stretchysnake import StretchySnakeVideoProcessor
    from modeling_stretchysnake.training.data import MultiScaleBatchSampler, VideoClipDataset, collate_clips
    from modeling_stretchysnake.training.scales import ScaleSampler
    from modeling_stretchysnake.training.streaming import StreamedClipBatches, StreamedVideos, usable_workers
    from modeling_stretchysnake.training.video_datasets import DataArguments, load_video_splits

    processor = StretchySnakeVideoProcessor(num_frames=8, resolution=56)
    sampler = ScaleSampler("static_tokens", frames=[4, 8], resolutions=[56, 84, 112], grid=4, seed=0)
    parquet = DataArguments("parquet", data_files=[f"train={path}" for path in shard_paths])

    def map_style(rows):
        dataset = VideoClipDataset(rows, processor, training=True, decoder=args.decoder)
        batches = MultiScaleBatchSampler(len(dataset), 8, sampler, seed=0)
        return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate_clips,
                                           num_workers=workers)

    files = load_video_splits(DataArguments(manifest=str(manifest_dir)), ["train"])["train"]
    streamed = load_video_splits(parquet, ["train"], stream="train")["train"]
    stream = StreamedClipBatches(StreamedVideos(streamed, processor, args.decoder, args.shuffle_buffer_size), 8, sampler)
    return {
        "files": lambda: map_style(files),
        "parquet": lambda: map_style(load_video_splits(parquet, ["train"])["train"]),
        "stream": lambda: torch.utils.data.DataLoader(stream, batch_size=None,
                                                     num_workers=usable_workers(workers, len(shard_paths))),
    }


def endless(loader):
    """Batch after batch, epoch after epoch (a map-style epoch of small data is shorter than the measurement)."""
    while True:
        yield from loader


def clips_per_second(make_loader, steps: int) -> float:
    iterator = endless(make_loader())
    next(iterator)  # the loader's start (workers, the stream's first shuffle buffer) is not a training rate
    clips, start = 0, time.perf_counter()
    for _ in range(steps):
        clips += len(next(iterator)["labels"])
    return clips / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_root", default="outputs/generated_actions", help="the main job's generated data")
    parser.add_argument("--videos_per_class", type=int, default=300, help="training videos per class (main job: 300)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--shuffle_buffer_size", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the rates to this file")
    args = parser.parse_args(argv)

    import torch

    from modeling_stretchysnake.training.synthetic_actions import load_or_generate

    torch.set_num_threads(1)
    root = Path(args.data_root)
    manifest = load_or_generate(root, {"train": args.videos_per_class, "test": 20})["train"]  # the main job's data
    shard_paths = write_shards(manifest, root / "parquet_shards", args.shards)
    rates: dict[tuple[str, int], list[float]] = {}
    for workers in args.workers:
        made = loaders(args, root / "manifest", shard_paths, workers)
        for _ in range(args.rounds):
            for source in SOURCES:
                rates.setdefault((source, workers), []).append(clips_per_second(made[source], args.steps))
    cpu = _cpu_name()
    print(f"clips per second into training ({cpu}; {args.steps} batches of 8 after the first, median of "
          f"{args.rounds} rounds; decoder {args.decoder}; {len(manifest)} videos, {args.shards} Parquet shards)")
    print(f"{'source':<10}" + "".join(f"{f'{w} workers':>22}" for w in args.workers))
    result = {}
    for source in SOURCES:
        cells = []
        for workers in args.workers:
            rate = statistics.median(rates[(source, workers)])
            ratio = rate / statistics.median(rates[("files", workers)])
            result[f"{source}@{workers}"] = {"clips_per_second": rate, "ratio_to_files": ratio,
                                             "rounds": rates[(source, workers)]}
            cells.append(f"{rate:8.1f} ({ratio:4.2f}x files)")
        print(f"{source:<10}" + "".join(f"{cell:>22}" for cell in cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "videos": len(manifest), **result}, indent=1))
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
