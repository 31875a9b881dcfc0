"""StretchySnakeTrainer: transformers.Trainer with one (frames, resolution, patch) per step and scale-grid evaluation.

Each step's batch comes from `MultiScaleBatchSampler`: every rank draws the same scale for the same step, decodes
its own share of the clips at that scale, and the model resizes its weights to it on the fly. Evaluation runs the
model over a grid of scales (single or multi-view) and reports top-1, top-5 and mean class accuracy per scale through
the package's `video_accuracy` evaluate module (`modeling_stretchysnake.training.metrics`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Trainer, TrainerState
from transformers.trainer_utils import get_last_checkpoint

from .data import ClipView, FixedScaleBatchSampler, MultiScaleBatchSampler, VideoClipDataset, collate_clips
from .distributed import use_fsdp_on_cpu
from .metrics import load_video_accuracy
from .scales import Scale, ScaleSampler
from .streaming import StreamedClipBatches, StreamedVideos, usable_workers

logger = logging.getLogger(__name__)

NO_DECAY_NAMES = ("position_embeddings", "cls_token", "A_log", "A_b_log")


class _MultiScaleDataLoader(DataLoader):
    """A DataLoader whose epoch reaches the batch sampler (Trainer calls `set_epoch` on the loader)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


def mix_batch(pixel_values: torch.Tensor, targets: torch.Tensor, mixup_alpha: float, cutmix_alpha: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (chosen at random when both are on) with the batch flipped; soft targets follow."""
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(alpha, alpha))
    flipped = pixel_values.flip(0)
    if use_cutmix:  # the same box in every frame
        height, width = pixel_values.shape[-2:]
        cut = math.sqrt(1 - lam)
        box_h, box_w = int(height * cut), int(width * cut)
        top = int(torch.randint(0, height - box_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - box_w + 1, (1,), generator=generator))
        pixel_values = pixel_values.clone()
        pixel_values[..., top : top + box_h, left : left + box_w] = flipped[..., top : top + box_h, left : left + box_w]
        lam = 1 - box_h * box_w / (height * width)
    else:
        pixel_values = lam * pixel_values + (1 - lam) * flipped
    return pixel_values, lam * targets + (1 - lam) * targets.flip(0)


class StretchySnakeTrainer(Trainer):
    """
    Args (beyond `transformers.Trainer`'s):
        scale_sampler: draws the training scale of each step (one of the five variants).
        eval_scales: the (frames, resolution, patch) grid `evaluate` reports on.
        eval_views: (temporal clips, spatial crops) averaged per video at evaluation; (1, 1) is single view.
        mixup_alpha, cutmix_alpha: batch mixing (0 turns it off). Label smoothing: `args.label_smoothing_factor`.
        layer_decay: layer-wise learning-rate decay (1.0 turns it off).
        tokens_per_batch: token-budget batching: each step's clips per process are chosen so that their patch
            tokens come closest to this number (see `MultiScaleBatchSampler`); None keeps
            `args.per_device_train_batch_size` clips every step.
        max_batch_size: the most clips a process takes in a step under a token budget.
        token_batch_loss: how steps of different sizes count under a token budget: "scaled" (the default: the
            mean loss over the step's clips times clips / expected clips per step, so a step's update grows with
            its size, the linear learning-rate rule; it trained better in bench/token_budget.py) or "mean" (every
            step counts the same).
    """

    def __init__(self, *args, scale_sampler: ScaleSampler, eval_scales: Sequence[Scale] = (),
                 eval_views: tuple[int, int] = (1, 1), mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 layer_decay: float = 1.0, tokens_per_batch: int | None = None, max_batch_size: int | None = None,
                 token_batch_loss: str = "scaled", **kwargs):
        if token_batch_loss not in ("mean", "scaled"):
            raise ValueError(f"token_batch_loss must be 'mean' or 'scaled', got {token_batch_loss!r}")
        kwargs.setdefault("data_collator", collate_clips)
        super().__init__(*args, **kwargs)
        self.scale_sampler = scale_sampler
        self.eval_scales = list(eval_scales)
        self.eval_views = tuple(eval_views)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.layer_decay = layer_decay
        self.tokens_per_batch = tokens_per_batch
        self.max_batch_size = max_batch_size
        self.token_batch_loss = token_batch_loss
        self._mean_clips: float | None = None
        self._last_scale: tuple[int, int, int] | None = None
        self._last_clips = 0
        self.nonfinite_loss_steps = 0

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if use_fsdp_on_cpu(self.accelerator):
            self.is_fsdp_enabled = True
            if self.accelerator.state.fsdp_plugin.activation_checkpointing and self.args.activation_checkpointing:
                raise ValueError("FSDP's activation checkpointing (fsdp_activation_checkpointing in the Accelerate "
                                 "config) and --activation_checkpointing both checkpoint every block: use one")

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under FSDP with sharded state dicts, `Trainer.save_model` writes no weights (the checkpoints carry the
        shards, for resuming): a save asked for outside a checkpoint gathers the full model instead, so the folder
        loads with `from_pretrained` on any number of devices. Collective: every process calls it."""
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if _internal_call or not self.is_fsdp_enabled or "FULL_STATE_DICT" in str(plugin.state_dict_type):
            return super().save_model(output_dir, _internal_call)
        state_dict = self.accelerator.get_state_dict(self.model)  # the whole model, on the main process
        self._save(output_dir, state_dict=state_dict)

    # ----- data -----
    def train(self, resume_from_checkpoint=None, **kwargs):
        self._stream_start_step = 0
        if isinstance(self.train_dataset, StreamedVideos) and resume_from_checkpoint:
            # a stream resumes by reading past the rows of the steps done, without decoding them (streaming.py):
            # not by the Trainer drawing and discarding decoded batches
            checkpoint = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                          else resume_from_checkpoint)
            if checkpoint:
                state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
                self._stream_start_step = state.global_step * self.args.gradient_accumulation_steps
            self.args.ignore_data_skip = True
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _stream_dataloader(self) -> DataLoader:
        stream = StreamedClipBatches(
            self.train_dataset, self.args.per_device_train_batch_size, self.scale_sampler,
            num_replicas=self.accelerator.num_processes, rank=self.accelerator.process_index, seed=self.args.seed,
            tokens_per_batch=self.tokens_per_batch, max_batch_size=self.max_batch_size,
            start_step=getattr(self, "_stream_start_step", 0),
        )
        self._mean_clips = sum(p * stream.clips(scale) for scale, p in self.scale_sampler.distribution())
        workers = usable_workers(self.args.dataloader_num_workers, stream.max_workers)
        if workers < self.args.dataloader_num_workers:
            logger.info("the stream has %d shard(s) for each of the %d process(es): %d DataLoader worker(s) instead of "
                        "%d, so that each has as many shards", stream.max_workers, self.accelerator.num_processes,
                        workers, self.args.dataloader_num_workers)
        return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=self.args.dataloader_pin_memory)

    def get_train_dataloader(self) -> DataLoader:
        if isinstance(self.train_dataset, StreamedVideos):
            return self._stream_dataloader()
        # Not passed through accelerator.prepare: its batch-sampler sharding would give ranks different scales
        # in one step. The sampler shards by rank itself; Trainer moves each batch to the device.
        sampler = MultiScaleBatchSampler(
            len(self.train_dataset), self.args.per_device_train_batch_size, self.scale_sampler,
            num_replicas=self.accelerator.num_processes, rank=self.accelerator.process_index, seed=self.args.seed,
            tokens_per_batch=self.tokens_per_batch, max_batch_size=self.max_batch_size,
        )
        self._mean_clips = sampler.mean_clips
        return _MultiScaleDataLoader(
            self.train_dataset, batch_sampler=sampler, collate_fn=collate_clips,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
        )

    # ----- optimisation -----
    def get_decay_parameter_names(self, model) -> list[str]:
        """Weight decay on matrices only: not on biases, norms, 1-D params, position embeddings, CLS or A_log."""
        return [
            name for name, parameter in model.named_parameters()
            if parameter.ndim > 1 and not any(key in name for key in NO_DECAY_NAMES)
        ]

    def _layer_id(self, name: str, num_layers: int) -> int:
        if ".embeddings." in f".{name}":
            return 0
        if ".layers." in f".{name}":
            return int(name.split("layers.")[1].split(".")[0]) + 1
        return num_layers + 1

    def create_optimizer(self, model=None):
        if self.layer_decay >= 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        num_layers = self.model.config.num_hidden_layers
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[int, bool], dict[str, Any]] = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            layer = self._layer_id(name, num_layers)
            key = (layer, name in decay)
            if key not in groups:
                scale = self.layer_decay ** (num_layers + 1 - layer)
                groups[key] = {"params": [], "lr": self.args.learning_rate * scale,
                               "weight_decay": self.args.weight_decay if name in decay else 0.0}
            groups[key]["params"].append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(list(groups.values()), lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        pixel_values, patch_size = inputs["pixel_values"], inputs.get("patch_size")
        num_labels = self.model.config.num_labels
        smoothing = self.args.label_smoothing_factor if model.training else 0.0
        targets = F.one_hot(labels, num_labels).float() * (1 - smoothing) + smoothing / num_labels
        if model.training and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            pixel_values, targets = mix_batch(pixel_values, targets, self.mixup_alpha, self.cutmix_alpha)
        outputs = model(pixel_values=pixel_values, patch_size=patch_size)
        loss = F.cross_entropy(outputs.logits.float(), targets)
        if model.training and self.tokens_per_batch and self.token_batch_loss == "scaled" and self._mean_clips:
            loss = loss * (len(labels) / self._mean_clips)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        for path in inputs.pop("skipped", ()):  # a stream's workers report the videos they could not decode
            self.train_dataset.failures[path] += 1
        inputs.pop("step", None)
        pixel_values = inputs["pixel_values"]
        self._last_scale = (pixel_values.shape[1], pixel_values.shape[-1], int(inputs["patch_size"]))
        self._last_clips = pixel_values.shape[0]
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Trainer's logging_nan_inf_filter (on by default) keeps NaN/inf out of the logged loss, so a diverging
        # run would look healthy: count such steps, log the count and warn once.
        if not torch.isfinite(loss).all():
            self.nonfinite_loss_steps += 1
            if self.nonfinite_loss_steps == 1:
                frames, resolution, patch = self._last_scale
                logger.warning("non-finite training loss at step %d (scale %dx%d/p%d); such steps are counted as "
                               "'nonfinite_loss_steps' in the logs", self.state.global_step, frames, resolution, patch)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._last_scale is not None:
            logs["frames"], logs["resolution"], logs["patch_size"] = self._last_scale
            logs["clips"] = self._last_clips
            if self.nonfinite_loss_steps:
                logs["nonfinite_loss_steps"] = self.nonfinite_loss_steps
        super().log(logs, start_time)

    # ----- evaluation -----
    @torch.no_grad()
    def predict_scale(self, dataset: VideoClipDataset, scale: Scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class probabilities of every view (`eval_views`: temporal clips x spatial crops, `ClipView`) of every video
        at one scale, with their labels and the manifest index of their video, gathered from all processes: one row
        per (video, view). The `video_accuracy` module averages a video's views (the one place that does)."""
        from accelerate.utils import gather_object

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        clips, crops = self.eval_views
        rows: dict[tuple[int, int], tuple[np.ndarray, int]] = {}  # (video, view) -> (probabilities, label)
        for view, (clip, crop) in enumerate((clip, crop) for clip in range(clips) for crop in range(crops)):
            view_set = copy.copy(dataset)  # shallow: shares `failures`, so skips land in the dataset's count
            view_set.view = ClipView(clip, clips, crop, crops)
            sampler = FixedScaleBatchSampler(len(dataset), self.args.per_device_eval_batch_size, scale,
                                             self.accelerator.num_processes, self.accelerator.process_index)
            loader = DataLoader(view_set, batch_sampler=sampler, collate_fn=collate_clips,
                                num_workers=self.args.dataloader_num_workers)
            for batch in loader:
                logits = model(pixel_values=batch["pixel_values"].to(self.args.device),
                               patch_size=batch["patch_size"]).logits.float().cpu()
                for index, label, row in zip(batch["index"], batch["labels"].tolist(), logits.softmax(-1).numpy()):
                    # an unreadable video is replaced by the next one: each video counts once per view
                    rows.setdefault((index, view), (row, label))
        # a (video, view) that two ranks both scored (even shares) counts once
        merged = dict(gather_object(list(rows.items())))
        order = sorted(merged)
        model.train(was_training)
        return (np.stack([merged[key][0] for key in order]), np.array([merged[key][1] for key in order]),
                np.array([video for video, _ in order]))

    def unreadable_videos(self, *datasets: VideoClipDataset) -> list[str]:
        """The distinct files any process failed to decode in `datasets` (collective: every process calls it)."""
        from accelerate.utils import gather_object

        local = sorted(set().union(*(dataset.failures for dataset in datasets)))
        return sorted(set(gather_object(local)))

    def evaluate_scales(self, dataset: VideoClipDataset | None = None,
                        scales: Sequence[Scale] | None = None) -> dict[Scale, dict[str, float]]:
        """top-1, top-5, mean class accuracy and the number of videos at each of `scales` (default: `eval_scales`).

        Computed by the package's `video_accuracy` evaluate module ("scale_grid"); its flat result (`top1@FxR`, ...,
        `top1_grid_mean`, ...) is kept as `last_grid_metrics`, the per-scale view as `last_scale_results`.
        Collective: every process calls it."""
        dataset = dataset if dataset is not None else self.eval_dataset
        scales = list(scales or self.eval_scales)
        names = {scale: f"{scale.frames}x{scale.resolution}" for scale in scales}
        if len(set(names.values())) < len(scales):  # the grid varies the patch size alone somewhere
            names = {scale: str(scale) for scale in scales}
        metric = load_video_accuracy("scale_grid")
        for scale in tqdm(scales, desc="eval scales", disable=not self.is_world_process_zero()):
            probabilities, labels, video_ids = self.predict_scale(dataset, scale)
            metric.add_batch(predictions=probabilities, references=labels, video_ids=video_ids,
                             scales=[names[scale]] * len(labels))
        self.last_grid_metrics = metric.compute()
        self.last_scale_results = {scale: {key.split("@")[0]: value for key, value in self.last_grid_metrics.items()
                                           if key.endswith(f"@{name}")} for scale, name in names.items()}
        return self.last_scale_results

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Accuracy over `eval_scales`; logs `eval_top1@FxR` per scale, the grid means and the skipped videos."""
        self.evaluate_scales(eval_dataset)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in self.last_grid_metrics.items()
                   if not key.startswith("num_")}
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics[f"{metric_key_prefix}_skipped_videos"] = float(len(self.unreadable_videos(dataset)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

