"""Flexible (multi-scale) training of StretchySnake, then accuracy over a frames x resolution grid.

    accelerate launch recipes/train.py                                   # embedded default, a few minutes on CPU
    accelerate launch recipes/train.py --config recipes/configs/ucf101.yaml
    accelerate launch --config_file recipes/configs/accelerate/cpu_2proc.yaml recipes/train.py   # 2 CPU processes
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py     # the same without a config (CPU-only box)

`accelerate launch --cpu --num_processes 2` starts ONE process: Accelerate's CPU launcher needs an MPI hostfile for
more. Every process logs its rank and the world size at start.

Every option is a CLI flag (`python recipes/train.py --help`); a YAML `--config` sets many at once and flags
given after it win. The data: `--dataset_name` (anything `datasets.load_dataset` takes: a Hub dataset, a local
folder in the Hub layout, `videofolder --data_dir D`, `csv` / `json` / `parquet --data_files F`; `--streaming` reads
its training split as a stream of shards) or `--manifest` (a DatasetDict from data_scripts/); with neither, a
generated action dataset (moving shapes whose classes need motion to tell apart, written as real video files) is
rendered under `--data_root` and used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# OpenMP threads (torch's and numba's) spin-wait at every barrier; on a machine where another process keeps a core
# busy, that turned each of many small parallel regions into a scheduler time slice: the main job's training step
# took 2.6-2.8x as long at 2 threads as at one. A short spin (set before torch loads libgomp) cut that to 1.7x and
# cost nothing on a quiet machine (bench/RESULTS.md). A value the user set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import portable_numerics  # noqa: E402  (no torch: it sets what CPU libraries read when torch loads them)

if __name__ == "__main__":
    portable_numerics.apply_before_torch(sys.argv[1:])

import torch  # noqa: E402
import yaml
from transformers import HfArgumentParser, TrainingArguments, set_seed

from modeling_stretchysnake import (
    STRETCHYSNAKE_PRESETS,
    StretchySnakeConfig,
    StretchySnakeForVideoClassification,
    StretchySnakeVideoProcessor,
)
from modeling_stretchysnake.cli import run_cli
from modeling_stretchysnake.training.compute_budget import save_scale_accuracy
from modeling_stretchysnake.training.data import DecodedClipCache, VideoClipDataset
from modeling_stretchysnake.training.distributed import end_processes
from modeling_stretchysnake.modeling_stretchysnake import resolve_patch_size
from modeling_stretchysnake.pretrained import load_model
from modeling_stretchysnake.training.reporting import format_table, plot_heatmaps, plot_training_curves, write_results
from modeling_stretchysnake.training.scales import SCALE_MODE_OF_VARIANT, VARIANTS, Scale, ScaleSampler
from modeling_stretchysnake.training.streaming import StreamedVideos
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer
from modeling_stretchysnake.training.video_datasets import DataArguments, VideoSplits, load_video_splits

logger = logging.getLogger("stretchysnake.train")

# The embedded default: a small model with a 4 x 4 base token grid (56 px, patch 14; 16 tokens a frame), so a CPU
# trains it in minutes. It starts from a sin-cos spatial position table and puts the CLS token at both ends of the
# sequence: at initialisation a single CLS token at the start hears little beyond the first frame, and the model
# took thousands of steps to learn motion; with both ends it learns the generated task in a few hundred
# (bench/learning.py, bench/RESULTS.md).
EMBEDDED_MODEL = dict(hidden_size=96, num_hidden_layers=4, image_size=56, patch_size=14, num_frames=8,
                      drop_path_rate=0.0, position_embedding_init="sincos", cls_position="ends")
DEFAULT_TRAINING_FLAGS = [
    "--output_dir", "outputs/stretchysnake-embedded", "--num_train_epochs", "6", "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "8", "--learning_rate", "2e-3", "--weight_decay", "0.05",
    "--warmup_steps", "10", "--lr_scheduler_type", "cosine", "--label_smoothing_factor", "0.1",
    "--logging_steps", "10", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
    "--dataloader_num_workers", "0",
    # AdamW as one fused kernel (torch's own vectorised code): the per-tensor foreach version takes each square root
    # through MKL's vector math, whose results depend on MKL's code branch (recipes/portable_numerics.py)
    "--optim", "adamw_torch_fused",
    # Every variant trains every parameter each step (the head, both scan directions, the resized kernel and position
    # tables): DDP need not traverse the graph for unused ones, which it otherwise does at every step.
    "--ddp_find_unused_parameters", "false",
]


@dataclass
class StretchySnakeArguments(DataArguments):
    config: str | None = field(default=None, metadata={"help": "YAML file of options (repeatable); later ones and flags win"})
    train_split: str = "train"
    eval_split: str = field(default="test", metadata={"help": "the split the scale grid is evaluated on"})
    data_root: str = field(default="outputs/generated_actions", metadata={"help": "where generated data is written"})
    generated_task: str = field(default="clear", metadata={
        "help": "generated data: 'clear', 'noisy', 'brief_motion', 'fine_texture' or 'glimpses' (synthetic_actions.TASKS)"})
    generated_train_per_class: int = 300
    generated_eval_per_class: int = 20
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a saved or converted model folder, a Hub model id, or an official VideoMamba checkpoint on the Hub, "
                "OWNER/REPO/FILE.pth (converted once and cached)"})
    preset: str = field(default="embedded", metadata={"help": "fresh model size: embedded, tiny, small, middle"})
    base_frames: int | None = field(default=None, metadata={"help": "frames the temporal position embedding is stored at"})
    base_resolution: int | None = field(default=None, metadata={
        "help": "fresh models: resolution the base grid is stored at (grid = R / patch size: the embedded model's "
                "patch is 14, so 56 px is a 4 x 4 grid; the tiny/small/middle presets' patch is 16)"})
    variant: str = field(default="static_tokens", metadata={"help": f"flexible-training variant: {', '.join(VARIANTS)}"})
    train_frames: list[int] = field(default_factory=lambda: [4, 8])
    train_resolutions: list[int] = field(default_factory=lambda: [56, 84, 112])
    train_patch_sizes: list[int] | None = field(default=None, metadata={"help": "for variants that draw a patch size"})
    eval_frames: list[int] = field(default_factory=lambda: [4, 8, 16])
    eval_resolutions: list[int] = field(default_factory=lambda: [56, 84, 112, 168])
    eval_clips: int = 1
    eval_crops: int = 1
    tokens_per_device_batch: int | None = field(default=None, metadata={
        "help": "token-budget batching: each step's clips per process are about this many patch tokens (frames x "
                "grid cells per clip), so low-cost scales get bigger batches; default: a fixed batch"})
    max_per_device_batch: int | None = field(default=None, metadata={
        "help": "with a token budget: the most clips a process takes in a step (default: no cap)"})
    token_batch_loss: str = field(default="scaled", metadata={
        "help": "with a token budget: 'scaled' (a step counts with its size; measured better) or 'mean' (every "
                "step counts the same)"})
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    layer_decay: float = 1.0
    decoder: str = field(default="auto", metadata={
        "help": "auto (decord first for training's squashed frames, PyAV first for evaluation's aspect-keeping "
                "resize: the faster per request, bench/RESULTS.md; torchcodec last where it loads), decord, pyav or "
                "torchcodec"})
    clip_cache_gb: float | None = field(default=None, metadata={
        "help": "keep decoded clips in memory up to this many GB, for videos drawn again at a scale they were decoded "
                "at (the fixed-scale model's clips and the evaluation grid are the flexible model's); default: 4 on "
                "the generated data, which fits, 0 (off) with --manifest"})
    baseline_side_by_side: str = field(default="auto", metadata={
        "help": "train the fixed-scale model in a second process at the same time as the flexible one, one CPU thread "
                "each (small models use two processes' threads better than one's): true, false, or auto (true in a "
                "single CPU process)"})
    cpu_numerics: str = field(default="auto", metadata={
        "help": "portable: every CPU library on one code path and 2 threads, the same bits on any x86-64 CPU with "
                "AVX2 and FMA (recipes/portable_numerics.py; set before torch loads, so only when this script is run "
                "itself); native: each library's fastest code for this CPU; auto: portable on the generated data "
                "(the main job), native with --manifest"})
    cpu_threads: int = field(default=0, metadata={
        "help": "torch threads when training on the CPU: 0 = every core available when this is the only process "
                "(accelerate's single-process launcher sets OMP_NUM_THREADS=1; with portable numerics, 2), the "
                "launcher's setting when there are several"})
    baseline: str = field(default="auto", metadata={
        "help": "also train a fixed-scale model of the same size in this run, same steps, evaluated on the same grid: "
                "FRAMESxRESOLUTION (e.g. 8x56), 'none', or 'auto' (the default: the base scale on the generated "
                "data; no fixed-scale model with --manifest, where it would double the training time)"})


def yaml_to_flags(path: str) -> list[str]:
    options = yaml.safe_load(Path(path).read_text()) or {}
    flags = []
    for key, value in options.items():
        values = value if isinstance(value, list) else [value]
        flags += [f"--{key}", *[str(v) for v in values]]
    return flags


def launch_flags() -> list[str]:
    """Defaults that depend on the machine. Without CUDA: no pinned memory, and with several processes
    (accelerate's MULTI_GPU launcher, torchrun) training on the CPU with gloo: without use_cpu, transformers sets up
    no process group there and every process trains alone."""
    if torch.cuda.is_available():
        return []
    flags = ["--dataloader_pin_memory", "false"]  # pinned memory helps only copies to a GPU; torch warns on CPU
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        flags += ["--use_cpu", "true"]
    return flags


def parse_arguments(argv: list[str]) -> tuple[StretchySnakeArguments, TrainingArguments]:
    # Each --config (in order) expands to flags; flags on the command line come last and win.
    config_flags = [flag for i, arg in enumerate(argv[:-1]) if arg == "--config" for flag in yaml_to_flags(argv[i + 1])]
    parser = HfArgumentParser((StretchySnakeArguments, TrainingArguments))
    flags = DEFAULT_TRAINING_FLAGS + launch_flags() + config_flags + argv
    script_args, training_args = parser.parse_args_into_dataclasses(flags)
    return script_args, training_args


def load_data(args: StretchySnakeArguments, training_args: TrainingArguments) -> VideoSplits:
    """The training and evaluation splits (`video_datasets`): the given dataset, or the generated one."""
    if args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming reads the training split as a stream with no length: give --max_steps")
    splits = (args.train_split, args.eval_split)
    stream = args.train_split if args.streaming else None
    if args.given:
        # the first process of each machine downloads and prepares (the cache is per machine), then the rest load
        with training_args.main_process_first(local=True, desc="dataset"):
            return load_video_splits(args, splits, seed=training_args.seed, stream=stream)
    from modeling_stretchysnake.training.synthetic_actions import load_or_generate

    counts = {args.train_split: args.generated_train_per_class, args.eval_split: args.generated_eval_per_class}
    # The first process renders, then each machine's first process (it finds the files on a shared filesystem, or
    # renders its own copy on a machine-local one), then the rest load: no two processes write one folder.
    with training_args.main_process_first(local=False, desc="generated dataset"):
        with training_args.main_process_first(local=True, desc="generated dataset on this machine"):
            load_or_generate(args.data_root, counts, seed=training_args.seed, task=args.generated_task)
    generated = dataclasses.replace(args, manifest=str(Path(args.data_root) / "manifest"))
    return load_video_splits(generated, splits, seed=training_args.seed, stream=stream)


def build_model(args: StretchySnakeArguments, label_names: list[str],
                scale_mode: str | None = None) -> StretchySnakeForVideoClassification:
    id2label = dict(enumerate(label_names))
    if scale_mode is None:
        scale_mode = SCALE_MODE_OF_VARIANT[args.variant]
    if args.model_name_or_path:
        return load_model(
            StretchySnakeForVideoClassification, args.model_name_or_path, id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            num_labels=len(label_names), scale_mode=scale_mode, ignore_mismatched_sizes=True,
        )
    if args.preset == "embedded":
        values = dict(EMBEDDED_MODEL)
    elif args.preset in STRETCHYSNAKE_PRESETS:
        values = dict(STRETCHYSNAKE_PRESETS[args.preset], num_frames=max(args.train_frames))
    else:
        raise ValueError(f"unknown preset {args.preset!r}")
    if args.base_frames:
        values["num_frames"] = args.base_frames
    if args.base_resolution:
        values["image_size"] = args.base_resolution
    config = StretchySnakeConfig(**values, id2label=id2label, scale_mode=scale_mode)
    return StretchySnakeForVideoClassification(config)


def baseline_scale(args: StretchySnakeArguments, config: StretchySnakeConfig) -> tuple[int, int] | None:
    """(frames, resolution) of the fixed-scale comparison model, or None."""
    if args.baseline == "none" or (args.baseline == "auto" and args.given):
        return None
    if args.baseline == "auto":  # the base scale: the stored patch size and token grid
        return max(args.train_frames), config.image_size
    try:
        frames, resolution = (int(v) for v in args.baseline.lower().split("x"))
    except ValueError:
        raise ValueError(f"--baseline must be FRAMESxRESOLUTION (e.g. 8x112), 'none' or 'auto'; got {args.baseline!r}")
    return frames, resolution


def train_and_evaluate(args, training_args, model, sampler, eval_scales, processor, train_set, eval_set):
    """Train `model` with one scale per step from `sampler`, save it under output_dir/final, evaluate the grid."""
    trainer = StretchySnakeTrainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set, processing_class=processor,
        scale_sampler=sampler, eval_scales=eval_scales, eval_views=(args.eval_clips, args.eval_crops),
        mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha, layer_decay=args.layer_decay,
        tokens_per_batch=args.tokens_per_device_batch, max_batch_size=args.max_per_device_batch,
        token_batch_loss=args.token_batch_loss,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    final = Path(training_args.output_dir) / "final"
    trainer.save_model(str(final))
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():  # the evaluated grid travels with the model, for compute budgets
        save_scale_accuracy(trainer.last_scale_results, final)
    return trainer, metrics


@dataclass
class TrainedModel:
    """What the summary needs of one trained model (the process that trained it may be another)."""

    scale_results: dict
    grid_metrics: dict
    log_history: list
    unreadable: list[str]

    @classmethod
    def of(cls, trainer: StretchySnakeTrainer, *datasets) -> "TrainedModel":
        return cls(trainer.last_scale_results, trainer.last_grid_metrics, trainer.state.log_history,
                   sorted(set().union(*(dataset.failures for dataset in datasets))))


def clip_datasets(args, processor, data: VideoSplits) -> tuple[VideoClipDataset | StreamedVideos, VideoClipDataset]:
    """The training clips (a stream with --streaming) and the evaluation clips, sharing one decoded-clip cache
    (--clip_cache_gb)."""
    cache_gb = args.clip_cache_gb if args.clip_cache_gb is not None else 0.0 if args.given else 4.0
    clip_cache = DecodedClipCache(int(cache_gb * 2**30)) if cache_gb > 0 else None
    train_rows, eval_rows = data[args.train_split], data[args.eval_split]
    train_set = (StreamedVideos(train_rows, processor, args.decoder, args.shuffle_buffer_size) if args.streaming else
                 VideoClipDataset(train_rows, processor, training=True, decoder=args.decoder, clip_cache=clip_cache))
    return train_set, VideoClipDataset(eval_rows, processor, training=False, decoder=args.decoder,
                                       clip_cache=clip_cache)


def train_fixed_scale(args, training_args, label_names, fixed, eval_scales, processor, train_set,
                      eval_set) -> TrainedModel:
    """The paper's "vanilla" baseline: same size, data, steps and optimiser, one scale, and the usual fixed patch
    size (static patches): at other resolutions the token grid grows or shrinks and the position embedding is
    interpolated, the way a fixed-scale checkpoint is used elsewhere. Saved under output_dir/fixed_scale."""
    fixed_args = dataclasses.replace(training_args, output_dir=str(Path(training_args.output_dir) / "fixed_scale"))
    set_seed(training_args.seed)
    fixed_model = build_model(args, label_names, scale_mode="static_patches")
    fixed_config = fixed_model.config
    fixed_sampler = ScaleSampler("static_patches", frames=[fixed[0]], resolutions=[fixed[1]],
                                 patch_sizes=[fixed_config.patch_size], seed=training_args.seed)
    fixed_scales = [Scale(s.frames, s.resolution, resolve_patch_size(fixed_config, s.resolution, s.resolution))
                    for s in eval_scales]
    trainer, _ = train_and_evaluate(args, fixed_args, fixed_model, fixed_sampler, fixed_scales, processor, train_set,
                                    eval_set)
    return TrainedModel.of(trainer, train_set, eval_set)


def train_fixed_scale_in_this_process(argv, fixed, eval_scales, label_names, processor,
                                      threads: int) -> TrainedModel:
    """`train_fixed_scale` as the second process of a side-by-side run: its own data loading and clip cache,
    `threads` threads, its progress as logged lines (the first process draws the progress bar)."""
    args, training_args = parse_arguments(argv)
    training_args = dataclasses.replace(training_args, disable_tqdm=True)
    logging.basicConfig(format=f"%(asctime)s %(levelname)s [fixed {fixed[0]}x{fixed[1]}] %(name)s: %(message)s",
                        level=logging.INFO, force=True)
    torch.set_num_threads(threads)
    train_set, eval_set = clip_datasets(args, processor, load_data(args, training_args))
    return train_fixed_scale(args, training_args, label_names, fixed, eval_scales, processor, train_set, eval_set)


def side_by_side(args, training_args) -> bool:
    """Whether the fixed-scale model trains in a second process beside the flexible one (--baseline_side_by_side)."""
    if args.baseline_side_by_side not in ("auto", "true", "false"):
        raise ValueError(f"--baseline_side_by_side must be auto, true or false; got {args.baseline_side_by_side!r}")
    if args.baseline_side_by_side == "auto":
        return training_args.device.type == "cpu" and training_args.world_size == 1
    return args.baseline_side_by_side == "true"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, training_args = parse_arguments(argv)
    # force: under torchrun the root logger already has a handler, which would make basicConfig a no-op
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    set_seed(training_args.seed)
    device = training_args.device  # sets up the process group: rank and world size are 0 and 1 before it
    numerics = portable_numerics.requested_mode(argv) if device.type == "cpu" else "native"
    numerics_description = portable_numerics.describe(numerics)
    data = load_data(args, training_args)
    label_names = data.label_names
    model = build_model(args, label_names)
    config = model.config
    fixed = baseline_scale(args, config)
    beside = bool(fixed) and side_by_side(args, training_args)
    threads = None
    if device.type == "cpu" and (args.cpu_threads or training_args.world_size == 1):
        # before the first scan call, so numba's pool is sized to match (selective_scan_numba); two processes side
        # by side take half the cores each (portable numerics: one each, on any machine)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        default = portable_numerics.THREADS if numerics == "portable" else cores
        threads = args.cpu_threads or (max(1, default // 2) if beside else default)
        torch.set_num_threads(threads)
    logger.info("process rank %d of world size %d (local rank %d, node rank %d) on %s with %d torch threads",
                training_args.process_index, training_args.world_size, training_args.local_process_index,
                int(os.environ.get("GROUP_RANK", 0)), device, torch.get_num_threads())
    if device.type == "cpu":
        logger.info("CPU numerics: %s", numerics_description)

    grid = config.grid_size
    scale_sampler = ScaleSampler(args.variant, frames=args.train_frames, resolutions=args.train_resolutions,
                                 patch_sizes=args.train_patch_sizes, grid=grid, seed=training_args.seed)
    eval_scales = [Scale(f, r, resolve_patch_size(config, r, r)) for f in args.eval_frames for r in args.eval_resolutions]
    processor = StretchySnakeVideoProcessor(num_frames=max(args.train_frames), resolution=config.image_size,
                                            decoder=args.decoder)
    train_set, eval_set = clip_datasets(args, processor, data)
    train_size = (f"a stream of {train_set.rows.num_shards} shard(s)" if isinstance(train_set, StreamedVideos)
                  else f"{len(train_set)}")
    logger.info("model %s/%d layers, %.2fM parameters; %s; %s train / %d eval videos; eval grid %s; fixed-scale "
                "comparison: %s", config.hidden_size, config.num_hidden_layers, model.num_parameters() / 1e6,
                scale_sampler, train_size, len(eval_set), [str(s) for s in eval_scales],
                f"{fixed[0]}x{fixed[1]}{' (in a second process, side by side)' if beside else ''}" if fixed else "none")
    logger.info("evaluation protocol: %d clip(s) x %d crop(s) per video, shortest-side resize + crop, top-1/top-5/"
                "mean class accuracy per frames x resolution", args.eval_clips, args.eval_crops)

    output_dir = Path(training_args.output_dir)
    with contextlib.ExitStack() as stack:
        fixed_future = None
        if beside:
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
            fixed_future = pool.submit(train_fixed_scale_in_this_process, argv, fixed, eval_scales, label_names,
                                       processor, threads or 1)
        trainer, metrics = train_and_evaluate(args, training_args, model, scale_sampler, eval_scales, processor,
                                              train_set, eval_set)
        runs = {args.variant: TrainedModel.of(trainer, train_set, eval_set)}
        if fixed:
            runs[f"fixed {fixed[0]}x{fixed[1]}"] = fixed_future.result() if beside else train_fixed_scale(
                args, training_args, label_names, fixed, eval_scales, processor, train_set, eval_set)
    unreadable = trainer.unreadable_videos(train_set, eval_set)  # collective: every process takes part
    unreadable = sorted(set(unreadable).union(*(run.unreadable for run in runs.values())))
    if trainer.is_world_process_zero():
        paths = write_results(runs[args.variant].scale_results, output_dir, title=f"{args.variant}: top-1 (%)",
                              grid_metrics=runs[args.variant].grid_metrics)
        log_histories = {name: run.log_history for name, run in runs.items()}
        (output_dir / "training_log.json").write_text(json.dumps(log_histories, indent=1))
        plot_training_curves(log_histories, output_dir / "training_curve.png")
        print(f"\nsaved model: {output_dir / 'final'}\nresults: {paths['csv']} (evaluate: {paths['evaluate']}), "
              f"heatmap: {paths['png']}, loss curves: {output_dir / 'training_curve.png'} "
              f"(logged values: {output_dir / 'training_log.json'})")
        print(f"unreadable videos skipped: {len(unreadable)} distinct file(s) over all processes"
              + (f": {unreadable}" if unreadable else ""))
        if eval_set.clip_cache is not None:
            cache = eval_set.clip_cache
            print(f"decoded clips served from memory (--clip_cache_gb): {cache.hits} of {cache.hits + cache.misses} "
                  f"requests in this process, {cache.bytes / 2**30:.2f} GB kept")
        for name, run in runs.items():
            views = "" if (args.eval_clips, args.eval_crops) == (1, 1) else \
                f", {args.eval_clips} clips x {args.eval_crops} crops per video"
            print(f"\ntop-1 accuracy (%) over frames x resolution, {name}{views}, chance {100 / len(label_names):.1f}%:"
                  f"\n{format_table(run.scale_results)}")
        if fixed:
            comparison = output_dir / "scale_grid_comparison.png"
            plot_heatmaps({name: run.scale_results for name, run in runs.items()}, comparison)
            fixed_run = runs[f"fixed {fixed[0]}x{fixed[1]}"]
            write_results(fixed_run.scale_results, output_dir / "fixed_scale", title=f"fixed {fixed[0]}x{fixed[1]}: "
                          "top-1 (%)", grid_metrics=fixed_run.grid_metrics)
            print(f"\nfixed-scale model: {output_dir / 'fixed_scale' / 'final'}; both grids: {comparison}")
    end_processes()
    return metrics


if __name__ == "__main__":
    run_cli(main)
