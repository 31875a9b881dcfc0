"""A few training steps of a tiny model that record, per process, what only a real multi-process run produces.

Launched by tests/test_multiprocess.py, e.g.
    accelerate launch --config_file recipes/configs/accelerate/cpu_2proc.yaml tests/multiprocess_probe.py \
        --manifest M --output_dir OUT --max_steps 4
Each rank writes OUT/rank{r}.json (world size, and per step the scale and the manifest indices of its clips) and
OUT/rank{r}.pt (its weights after training). `--shard R/N` trains one process on rank R's shard of an N-process
run, alone: what that rank would have learned without the other ranks' gradients; `--global_batch N` trains one
process on the union of the N ranks' batches at every step: what the N processes together should learn.
`--tokens_per_batch` turns on token-budget batching (clips per step follow the step's scale). `--final` saves the
trained model with `trainer.save_model` to OUT/final. `--stream DATASET` trains on DATASET's train split read as a
stream (`datasets.load_dataset(DATASET, streaming=True)`, --workers DataLoader workers); a step's indices are then
its videos' names. Each record also holds the distributed type, the training loss of each step on this rank, and the
global and local (this rank's shard) shapes of the first block's parameters.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import small_config  # noqa: E402

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor  # noqa: E402
from modeling_stretchysnake.training.data import MultiScaleBatchSampler, VideoClipDataset, collate_clips  # noqa: E402
from modeling_stretchysnake.training.distributed import end_processes  # noqa: E402
from modeling_stretchysnake.training.scales import ScaleSampler  # noqa: E402
from modeling_stretchysnake.training.streaming import StreamedVideos  # noqa: E402
from modeling_stretchysnake.training.video_datasets import DataArguments, load_video_splits  # noqa: E402
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer, _MultiScaleDataLoader  # noqa: E402


class UnionBatchSampler(MultiScaleBatchSampler):
    """One process's batches made of the batches that `num_ranks` ranks would take at each step, concatenated."""

    def __init__(self, *args, num_ranks: int, **kwargs):
        self.ranks = [MultiScaleBatchSampler(*args, num_replicas=num_ranks, rank=r, **kwargs) for r in range(num_ranks)]
        super().__init__(*args, num_replicas=num_ranks, rank=0, **kwargs)

    def set_epoch(self, epoch):
        for sampler in self.ranks:
            sampler.set_epoch(epoch)

    def __iter__(self):
        for batches in zip(*self.ranks):
            yield [item for batch in batches for item in batch]


class RecordingTrainer(StretchySnakeTrainer):
    def __init__(self, *args, shard=None, global_batch=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.shard = shard
        self.global_batch = global_batch
        self.steps = []

    def get_train_dataloader(self):
        if self.shard is None and self.global_batch is None:
            return super().get_train_dataloader()
        common = dict(seed=self.args.seed, tokens_per_batch=self.tokens_per_batch, max_batch_size=self.max_batch_size)
        args = (len(self.train_dataset), self.args.per_device_train_batch_size, self.scale_sampler)
        if self.global_batch:
            sampler = UnionBatchSampler(*args, num_ranks=self.global_batch, **common)
        else:
            rank, world = self.shard
            sampler = MultiScaleBatchSampler(*args, num_replicas=world, rank=rank, **common)
        return _MultiScaleDataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=collate_clips)

    def training_step(self, model, inputs, num_items_in_batch=None):
        pixel_values = inputs["pixel_values"]
        step = {"step": self.state.global_step + 1, "frames": pixel_values.shape[1],
                "resolution": pixel_values.shape[-1], "patch_size": int(inputs["patch_size"]),
                "indices": list(inputs["index"])}
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.steps.append({**step, "loss": loss.item()})
        return loss


def block_shards(model) -> dict:
    """{name: [global shape, this rank's local shape]} of the first block's parameters (DTensors under FSDP)."""
    block = model.stretchysnake.layers[0]
    return {name: [list(p.shape), list(p.to_local().shape if hasattr(p, "to_local") else p.shape)]
            for name, p in block.named_parameters()}


def main():
    parser = argparse.ArgumentParser()
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--manifest")
    data.add_argument("--stream", help="a dataset whose train split is read as a stream")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--shard", default=None, help="R/N: train alone on rank R's shard of an N-process run")
    parser.add_argument("--global_batch", type=int, default=None, help="N: one process, N ranks' batches a step")
    parser.add_argument("--tokens_per_batch", type=int, default=None, help="token-budget batching")
    parser.add_argument("--final", action="store_true", help="save the trained model to OUT/final")
    args = parser.parse_args()
    out = Path(args.output_dir)
    training_args = TrainingArguments(
        output_dir=str(out), max_steps=args.max_steps, per_device_train_batch_size=2, learning_rate=5e-2,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_steps=1, report_to="none", seed=0,
        save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500, use_cpu=True,
        dataloader_num_workers=args.workers, disable_tqdm=True,
    )
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(num_labels=5, pooling="mean"))
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    if args.stream:
        rows = load_video_splits(DataArguments(dataset_name=args.stream), ["train"], stream="train")["train"]
        train_set = StreamedVideos(rows, processor, shuffle_buffer_size=4)
    else:
        train_set = VideoClipDataset(load_from_disk(args.manifest)["train"], processor, training=True)
    shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
    trainer = RecordingTrainer(
        model=model, args=training_args, train_dataset=train_set, processing_class=processor, shard=shard,
        global_batch=args.global_batch,
        scale_sampler=ScaleSampler("static_tokens", frames=[2, 3, 4], resolutions=[16, 24, 32], grid=4, seed=0),
        tokens_per_batch=args.tokens_per_batch, max_batch_size=4,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    rank = trainer.args.process_index
    record = {"world_size": trainer.args.world_size, "rank": rank, "steps": trainer.steps,
              "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
              "node_rank": int(os.environ.get("GROUP_RANK", 0)), "shards": block_shards(trainer.model),
              "skipped": sorted(train_set.failures)}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    weights = trainer.accelerator.get_state_dict(trainer.model)  # collective; whole on rank 0 only under FSDP
    if weights:
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, out / f"rank{rank}.pt")
    if args.final:
        trainer.save_model(str(out / "final"))
    end_processes()


if __name__ == "__main__":
    main()
