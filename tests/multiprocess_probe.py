"""A few training steps of a tiny model that record, per process, what only a real multi-process run produces.

Launched by tests/test_multiprocess.py, e.g.
    accelerate launch --config_file recipes/configs/accelerate/cpu_2proc.yaml tests/multiprocess_probe.py \
        --manifest M --output_dir OUT --max_steps 4
Each rank writes OUT/rank{r}.json (world size, and per step the scale and the manifest indices of its clips) and
OUT/rank{r}.pt (its weights after training). `--shard R/N` trains one process on rank R's shard of an N-process
run, alone: what that rank would have learned without the other ranks' gradients. `--tokens_per_batch` turns on
token-budget batching (clips per step follow the step's scale).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import small_config  # noqa: E402

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor  # noqa: E402
from modeling_stretchysnake.data import MultiScaleBatchSampler, VideoClipDataset, collate_clips  # noqa: E402
from modeling_stretchysnake.scales import ScaleSampler  # noqa: E402
from modeling_stretchysnake.trainer import StretchySnakeTrainer, _MultiScaleDataLoader  # noqa: E402


class RecordingTrainer(StretchySnakeTrainer):
    def __init__(self, *args, shard=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.shard = shard
        self.steps = []

    def get_train_dataloader(self):
        if self.shard is None:
            return super().get_train_dataloader()
        rank, world = self.shard
        sampler = MultiScaleBatchSampler(len(self.train_dataset), self.args.per_device_train_batch_size,
                                         self.scale_sampler, num_replicas=world, rank=rank, seed=self.args.seed,
                                         tokens_per_batch=self.tokens_per_batch, max_batch_size=self.max_batch_size)
        return _MultiScaleDataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=collate_clips)

    def training_step(self, model, inputs, num_items_in_batch=None):
        pixel_values = inputs["pixel_values"]
        self.steps.append({"step": self.state.global_step + 1, "frames": pixel_values.shape[1],
                           "resolution": pixel_values.shape[-1], "patch_size": int(inputs["patch_size"]),
                           "indices": list(inputs["index"])})
        return super().training_step(model, inputs, num_items_in_batch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--shard", default=None, help="R/N: train alone on rank R's shard of an N-process run")
    parser.add_argument("--tokens_per_batch", type=int, default=None, help="token-budget batching")
    args = parser.parse_args()
    out = Path(args.output_dir)
    training_args = TrainingArguments(
        output_dir=str(out), max_steps=args.max_steps, per_device_train_batch_size=2, learning_rate=5e-2,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_steps=1, report_to="none", seed=0,
        save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500, use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(num_labels=5, pooling="mean"))
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    train_set = VideoClipDataset(load_from_disk(args.manifest)["train"], processor, training=True)
    shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
    trainer = RecordingTrainer(
        model=model, args=training_args, train_dataset=train_set, processing_class=processor, shard=shard,
        scale_sampler=ScaleSampler("static_tokens", frames=[2, 3, 4], resolutions=[16, 24, 32], grid=4, seed=0),
        tokens_per_batch=args.tokens_per_batch, max_batch_size=4,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    rank = trainer.args.process_index
    record = {"world_size": trainer.args.world_size, "rank": rank, "steps": trainer.steps}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    torch.save({k: v.detach().cpu() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()},
               out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
