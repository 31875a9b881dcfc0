"""How fast does a small from-scratch model learn the generated motion task? StretchySnake vs VideoMAE, and what matters.

    python bench/learning.py                                  # every run below, 300 steps each
    python bench/learning.py --runs ours videomae --steps 150
    python bench/learning.py --base lr=3e-3 pooling=mean --runs ours ours_task_quiet   # other baseline settings

All runs see the same decoded clips (rendered once, decoded once at --frames x --resolution, squash resize), the
same batches in the same order, batch --batch, AdamW (weight decay 0.05, none on 1-D parameters and embeddings),
linear warmup then cosine decay, label smoothing 0.1, one seed. Both models have width 96 and depth 4 and see the
same tokens: StretchySnake with static tokens (patch = resolution / 7, a 7 x 7 grid), VideoMAE with tubelet 1 and
the same patch. A run changes one thing against `ours` (or against `videomae`); `task_*` runs re-render the data
with other task settings. Prints, per run, test top-1 at the end, the training loss over the last 20 steps, and the
CPU time of training; the table is written to --output as JSON too.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modeling_stretchysnake.training.synthetic_actions import TASKS as PACKAGE_TASKS

WIDTH, DEPTH, GRID = 96, 4, 7
TASKS = {  # render options of synthetic_actions.render_action
    "default": {},
    "quiet": {"noise": 4},
    "big_moves": {"side_range": (1 / 4, 1 / 3), "min_travel": 1 / 2},
    "easy": PACKAGE_TASKS["clear"],
    "easy_no_noise": {**PACKAGE_TASKS["clear"], "noise": 0},
}
# name -> changes against the baseline of its model
RUNS = {
    "ours": {},
    "videomae": {"model": "videomae"},
    "ours_lr_3e-3": {"lr": 3e-3},
    "ours_lr_3e-4": {"lr": 3e-4},
    "videomae_lr_3e-3": {"model": "videomae", "lr": 3e-3},
    "ours_no_warmup": {"warmup": 0},
    "ours_mean_pooling": {"pooling": "mean"},
    "ours_videomamba_dt_init": {"dt_init": "videomamba"},
    "ours_temporal_pos_random": {"temporal_init": "trunc_normal"},
    "ours_drop_path_0.1": {"drop_path": 0.1},
    "ours_task_quiet": {"task": "quiet"},
    "ours_task_big_moves": {"task": "big_moves"},
    "videomae_task_big_moves": {"model": "videomae", "task": "big_moves"},
    "ours_pos_sincos": {"pos_init": "sincos"},
    "ours_task_easy": {"task": "easy"},
    "ours_task_easy_pos_sincos": {"task": "easy", "pos_init": "sincos"},
    "videomae_task_easy": {"model": "videomae", "task": "easy"},
    "ours_easy_sincos_lr_3e-3": {"task": "easy", "pos_init": "sincos", "lr": 3e-3},
    "ours_easy_sincos_lr_5e-3": {"task": "easy", "pos_init": "sincos", "lr": 5e-3},
    "ours_easy_sincos_dt_max_0.01": {"task": "easy", "pos_init": "sincos", "dt_max": 0.01},
    "ours_easy_sincos_grid_4": {"task": "easy", "pos_init": "sincos", "grid": 4},
    "videomae_easy_grid_4": {"model": "videomae", "task": "easy", "grid": 4},
    "ours_easy_sincos_depth_8_width_64": {"task": "easy", "pos_init": "sincos", "depth": 8, "width": 64},
    "ours_easy_sincos_temporal_sincos": {"task": "easy", "pos_init": "sincos", "temporal_init": "sincos"},
    # second study (issue: the main job that learns), run with --base pos_init=sincos lr=2e-3 task=easy
    "ours_cls_middle": {"cls_position": "middle"},
    "ours_proj_kaiming": {"proj_init": "kaiming_uniform"},
    "ours_lr_4e-3": {"lr": 4e-3},
    "ours_task_easy_no_noise": {"task": "easy_no_noise"},
    "ours_temporal_sincos": {"temporal_init": "sincos"},
    "ours_dt_max_0.01": {"dt_max": 0.01},
    "ours_mean_pooling_temporal_sincos": {"pooling": "mean", "temporal_init": "sincos"},
    "ours_grid_4": {"grid": 4},
    "ours_grid_4_mean_pooling": {"grid": 4, "pooling": "mean"},
    "ours_grid_4_mean_pooling_temporal_sincos": {"grid": 4, "pooling": "mean", "temporal_init": "sincos"},
    "ours_grid_4_temporal_sincos": {"grid": 4, "temporal_init": "sincos"},
    "ours_cls_middle_task_default": {"cls_position": "middle", "task": "default"},
    "ours_proj_kaiming_task_default": {"proj_init": "kaiming_uniform", "task": "default"},
    # the result, side by side (--base pos_init=sincos lr=2e-3 task=easy grid=4, 300 clips per class)
    "ours_cls_ends": {"cls_position": "ends"},
    "ours_cls_ends_task_default": {"cls_position": "ends", "task": "default"},
    "ours_task_default": {"task": "default"},
    "videomae_task_default": {"model": "videomae", "task": "default"},
}
BASELINE = {"model": "stretchysnake", "lr": 1e-3, "warmup": 20, "pooling": "cls", "dt_init": "mamba",
            "temporal_init": "zeros", "pos_init": "trunc_normal", "drop_path": 0.0, "task": "default",
            "width": WIDTH, "depth": DEPTH, "grid": GRID, "dt_max": 0.1, "proj_init": "trunc_normal",
            "cls_position": "start"}


def decoded_clips(task: str, args) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (pixel_values (n, T, 3, R, R), labels (n,))} for a task, rendered under --data_root once."""
    from datasets import load_from_disk

    from modeling_stretchysnake import StretchySnakeVideoProcessor
    from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

    root = Path(args.data_root) / f"{task}_{args.train_per_class}x{args.eval_per_class}_seed{args.data_seed}"
    if not (root / "manifest").exists():
        generate_action_dataset(root, {"train": args.train_per_class, "test": args.eval_per_class}, seed=args.data_seed,
                                **TASKS[task])
    manifest = load_from_disk(str(root / "manifest"))
    processor = StretchySnakeVideoProcessor()
    splits = {}
    for split in ("train", "test"):
        rows = manifest[split]
        pixels = torch.cat([processor(path, scale=(args.frames, args.resolution))["pixel_values"]
                            for path in rows["video"]])
        splits[split] = (pixels, torch.tensor(rows["label"]))
    return splits


def build(settings: dict, args, num_labels: int) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    grid = settings["grid"]
    patch = args.resolution // grid
    if settings["model"] == "videomae":
        from transformers import VideoMAEConfig, VideoMAEForVideoClassification

        config = VideoMAEConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=3,
                                intermediate_size=4 * WIDTH, image_size=args.resolution, patch_size=patch,
                                num_frames=args.frames, tubelet_size=1, num_labels=num_labels,
                                drop_path_rate=settings["drop_path"])
        return VideoMAEForVideoClassification(config)
    from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification

    config = StretchySnakeConfig(hidden_size=settings["width"], num_hidden_layers=settings["depth"], image_size=grid * 16, patch_size=16,
                                 time_step_max=settings["dt_max"],
                                 num_frames=args.frames, num_labels=num_labels, drop_path_rate=settings["drop_path"],
                                 pooling=settings["pooling"], position_embedding_init=settings["pos_init"],
                                 projection_init=settings["proj_init"],
                                 cls_position="start" if settings["cls_position"] == "middle" else settings["cls_position"])
    model = StretchySnakeForVideoClassification(config)
    if settings["cls_position"] == "middle":
        move_cls_to_the_middle(model)
    with torch.no_grad():
        if settings["dt_init"] == "videomamba":  # VideoMamba's blanket init: every Linear trunc-normal, bias zero
            for layer in model.stretchysnake.layers:
                for dt_proj in (layer.mixer.dt_proj, layer.mixer.dt_proj_b):
                    torch.nn.init.trunc_normal_(dt_proj.weight, std=0.02)
                    torch.nn.init.zeros_(dt_proj.bias)
        temporal = model.stretchysnake.embeddings.temporal_position_embeddings
        if settings["temporal_init"] == "trunc_normal":
            torch.nn.init.trunc_normal_(temporal, std=0.02)
        elif settings["temporal_init"] == "sincos":  # 1-D sin-cos over frames, amplitude 1 (as the spatial table)
            temporal.copy_(sincos_table_1d(temporal.shape[1], temporal.shape[2]).unsqueeze(0))
    return model


def move_cls_to_the_middle(model) -> None:
    """Study only: put the CLS token in the middle of the patch tokens (Vim's choice) and read it there. (Both
    ends is the package's `config.cls_position="ends"`.)"""
    embeddings, backbone = model.stretchysnake.embeddings, model.stretchysnake
    embed, backbone_forward = embeddings.forward, backbone.forward

    def forward_embeddings(pixel_values, patch_size):
        tokens = embed(pixel_values, patch_size)
        cls, patches = tokens[:, :1], tokens[:, 1:]
        middle = patches.shape[1] // 2
        return torch.cat([patches[:, :middle], cls, patches[:, middle:]], dim=1)

    def forward_backbone(pixel_values, patch_size=None, output_hidden_states=None, return_dict=None, **kwargs):
        outputs = backbone_forward(pixel_values, patch_size, output_hidden_states, True)
        hidden = outputs.last_hidden_state
        outputs.pooler_output = hidden[:, (hidden.shape[1] - 1) // 2]
        return outputs

    embeddings.forward, backbone.forward = forward_embeddings, forward_backbone


def reach_table(baseline: dict, args) -> list[tuple[str, list[float]]]:
    """At initialisation: how strongly the classifier's input (the CLS token) depends on each frame, relative to
    the first frame (mean |d CLS^2 / d pixels| per frame over random clips and 2 seeds)."""
    variants = {"baseline": {}, "proj_init=kaiming_uniform": {"proj_init": "kaiming_uniform"},
                "dt_max=0.01": {"dt_max": 0.01}, "cls_position=middle": {"cls_position": "middle"},
                "cls_position=ends": {"cls_position": "ends"}}
    rows = []
    for name, change in variants.items():
        per_seed = []
        for seed in (0, 1):
            model = build({**baseline, **change}, argparse.Namespace(**{**vars(args), "seed": seed}), 5).eval()
            torch.manual_seed(seed)
            pixels = torch.randn(4, args.frames, 3, args.resolution, args.resolution, requires_grad=True)
            pooled = model.stretchysnake(pixels).pooler_output
            (grad,) = torch.autograd.grad(pooled.pow(2).sum(), pixels)
            per_frame = grad.abs().sum(dim=(0, 2, 3, 4))
            per_seed.append(per_frame / per_frame[0])
        rows.append((name, torch.stack(per_seed).mean(0).tolist()))
    return rows


def sincos_table_1d(length: int, dim: int) -> torch.Tensor:
    half = dim // 2
    frequencies = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / max(half, 1))
    angles = torch.arange(length, dtype=torch.float32).reshape(-1, 1) * frequencies
    return torch.nn.functional.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim - 2 * half))


def optimizer_for(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        embedding = "position" in name or "cls_token" in name or "A_log" in name or "A_b_log" in name
        (no_decay if parameter.ndim < 2 or embedding else decay).append(parameter)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr)


def train_and_test(settings: dict, data, args) -> dict:
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    num_labels = int(train_y.max()) + 1
    model = build(settings, args, num_labels).train()
    optimizer = optimizer_for(model, settings["lr"])
    warmup = settings["warmup"]

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(args.seed)  # the same batches, in the same order, for every run
    order = torch.cat([torch.randperm(len(train_y), generator=generator)
                       for _ in range(math.ceil(args.steps * args.batch / len(train_y)))])
    losses, curve = [], {}
    start = time.process_time()
    for step in range(args.steps):
        if args.eval_every and step and step % args.eval_every == 0:
            curve[step] = accuracy(model, test_x, test_y)
            model.train()
        index = order[step * args.batch:(step + 1) * args.batch]
        logits = model(pixel_values=train_x[index]).logits
        loss = F.cross_entropy(logits, train_y[index], label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        losses.append(loss.item())
    train_seconds = time.process_time() - start  # includes the intermediate evaluations, if any
    curve[args.steps] = accuracy(model, test_x, test_y)
    return {"top1": curve[args.steps], "final_loss": sum(losses[-20:]) / len(losses[-20:]),
            "first_loss": sum(losses[:20]) / len(losses[:20]), "train_cpu_seconds": train_seconds,
            "top1_by_step": curve}


def accuracy(model, test_x, test_y) -> float:
    model.eval()
    with torch.inference_mode():
        predictions = torch.cat([model(pixel_values=test_x[i:i + 16]).logits.argmax(-1)
                                 for i in range(0, len(test_y), 16)])
    return 100.0 * (predictions == test_y).float().mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=56, help="a multiple of 7 (the 7 x 7 token grid)")
    parser.add_argument("--train_per_class", type=int, default=100)
    parser.add_argument("--eval_per_class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and batch order")
    parser.add_argument("--data_seed", type=int, default=0, help="the rendered clips")
    parser.add_argument("--reach", action="store_true", help="only print how far the CLS token hears at init")
    parser.add_argument("--eval_every", type=int, default=0, help="also record test top-1 every N steps")
    parser.add_argument("--data_root", default="outputs/learning_data")
    parser.add_argument("--output", default="outputs/learning.json")
    parser.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"change the baseline every run starts from; keys: {', '.join(BASELINE)}")
    args = parser.parse_args(argv)
    baseline = dict(BASELINE)
    for item in args.base:
        key, _, value = item.partition("=")
        if key not in BASELINE:
            parser.error(f"--base: unknown key {key!r}")
        baseline[key] = type(BASELINE[key])(value)
    if args.resolution % baseline["grid"]:
        parser.error(f"--resolution must be a multiple of the token grid {baseline['grid']}")
    if args.reach:
        print(f"CLS sensitivity to each of {args.frames} frames at init, relative to frame 0 "
              f"({args.resolution} px, grid {baseline['grid']}):")
        for name, values in reach_table(baseline, args):
            print(f"  {name:<28} " + " ".join(f"{v:.1e}" for v in values))
        return

    grid = baseline["grid"]
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; width {WIDTH}, "
          f"depth {DEPTH}, {args.frames} frames x {args.resolution} px ({grid}x{grid} tokens unless a run changes "
          f"it), batch {args.batch}, {args.steps} steps, {args.train_per_class}/{args.eval_per_class} clips per "
          f"class; baseline {baseline}", flush=True)
    data, rows = {}, {}
    for name in args.runs:
        settings = {**baseline, **RUNS[name]}
        if settings["task"] not in data:
            data[settings["task"]] = decoded_clips(settings["task"], args)
        rows[name] = train_and_test(settings, data[settings["task"]], args)
        print(f"  {name}: {rows[name]}", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=2))

    print(f"\n{'run':<28} {'changed':<40} {'top-1 %':>8} {'loss first->last 20':>20} {'train CPU s':>12}")
    for name, row in rows.items():
        changed = ", ".join(f"{k}={v}" for k, v in RUNS[name].items()) or "baseline"
        print(f"{name:<28} {changed:<40} {row['top1']:>8.1f} {row['first_loss']:>9.2f} ->{row['final_loss']:>7.2f} "
              f"{row['train_cpu_seconds']:>12.1f}")
    if args.eval_every:
        print("\ntest top-1 by step: " + "; ".join(
            f"{name} " + " ".join(f"{step}:{top1:.0f}" for step, top1 in row["top1_by_step"].items())
            for name, row in rows.items()))


if __name__ == "__main__":
    main()
