"""Cost versus frames and resolution: StretchySnake-tiny vs transformers' VideoMAE at equal width and depth.

    python bench/scaling.py                         # frames 8..64 at 224 px, resolutions 96..384 at 8 frames
    python bench/scaling.py --frames 8 16 --resolutions 112 224 --modes fwd
    python bench/scaling.py --modes train           # training steps only: width 96, depth 4, batch 8

Both models: width 192, depth 24, patch 16, batch 1; VideoMAE with tubelet 1 so both see the same T x 196 tokens
(its default tubelet 2 would halve its tokens). StretchySnake keeps patch 16 here (static patches), so lower
resolution means fewer tokens. Each measurement runs in a fresh subprocess: after a warm-up pass on a 1-frame
input, one full pass gives the peak resident memory above the level before it; the time is the median of up to
--repeats further passes (fewer once their total passes --repeat_seconds), so one-off first-pass costs
(page faults, kernel selection for a new shape) do not count.
fwd+bwd runs use activation checkpointing on every block for both models (without it 64 frames does not fit in
24 GiB for either). GFLOPs are counted with torch.utils.flop_counter (matmuls, convolutions; VideoMAE with eager
attention, whose matmuls the counter sees, unlike the CPU SDPA kernel); the
selective scan's elementwise work is not a matmul, so it is added analytically as 9 * B * L * d_inner * N per
scan (mamba-ssm's own estimate), two scans per block.
"train" rows time one whole training step (forward, cross-entropy on a classification head, backward, AdamW step)
of a small model (--train_width, --train_depth; default 96 x 4) at batch --train_batch (8), 8 frames at 112 and 224
px, without activation checkpointing; memory as above.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

MODELS = ("stretchysnake", "videomae")
# The old, unfused mixer (conv, projections and each direction's scan as separate autograd ops on flipped copies)
# is measured as a row of its own with --unfused.
UNFUSED = "stretchysnake_unfused"


TRAIN_LABELS = 5


def build(name: str, attention: str = "sdpa", width: int = 192, depth: int = 24, classifier: bool = False,
          patch: int = 16):
    """The backbone (or, with classifier, the video classifier) at the given width, depth and patch size (the base
    grid stays 14 x 14; patch 14 is the main job's 56 px model, with CLS at both ends as there)."""
    if name.startswith("stretchysnake"):
        from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification, StretchySnakeModel

        config = StretchySnakeConfig(hidden_size=width, num_hidden_layers=depth, scale_mode="static_patches",
                                     drop_path_rate=0.0, num_frames=8, num_labels=TRAIN_LABELS, patch_size=patch,
                                     image_size=14 * patch, fused_mixer=name != UNFUSED,
                                     cls_position="ends" if patch == 14 else "start")
        return (StretchySnakeForVideoClassification if classifier else StretchySnakeModel)(config)
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel

    config = VideoMAEConfig(hidden_size=width, num_hidden_layers=depth, num_attention_heads=3,
                            intermediate_size=4 * width, image_size=14 * patch, patch_size=patch, num_frames=8,
                            tubelet_size=1, attn_implementation=attention, num_labels=TRAIN_LABELS)
    return (VideoMAEForVideoClassification if classifier else VideoMAEModel)(config)


def saved_activation_floats(parameters, run) -> int:
    """Elements of the tensors autograd keeps for backward while run() executes, parameters (and views of them) left
    out, each storage once."""
    import torch

    parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            kept[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(kept.values())


def saved_per_token_layer(name: str, frames: int, resolution: int, width: int, patch: int = 16) -> dict:
    """Saved-for-backward floats per token per block, in units of the width: depth 2 minus depth 1, batch 1, so
    embeddings, head and loss cancel. Counts elements, whatever their dtype: the same on any device."""
    import torch

    counts = []
    tokens = frames * (resolution // patch) ** 2
    for depth in (1, 2):
        torch.manual_seed(0)
        model = build(name, width=width, depth=depth, classifier=True, patch=patch).train()
        if name == "videomae":
            videomae_positions(model, frames, resolution, patch)
        pixel_values, labels = torch.randn(1, frames, 3, resolution, resolution), torch.zeros(1, dtype=torch.long)
        counts.append(saved_activation_floats(model.parameters(), lambda: model(pixel_values, labels=labels)))
    return {"model": name, "frames": frames, "resolution": resolution, "mode": "saved", "patch": patch,
            "tokens": tokens, "saved_per_token_layer": (counts[1] - counts[0]) / tokens / width}


def official_fused_saved_per_token_layer(width: int, state_size: int = 16, expand: int = 2) -> float:
    """The official VideoMamba block's saved elements per token, from mamba-ssm's source (v2 bimamba,
    ``mamba_inner_fn_no_out_proj`` with checkpoint_lvl=1 once per direction, the backward one on xz.flip(-1)):
    per direction it keeps xz (2 d_inner), x_dbl (rank + 2N), B and C copies (2N) and the ungated scan output
    (d_inner); out_proj keeps its input (d_inner); the fused add + RMSNorm keeps the residual (D) and in_proj its
    input (D). Per-sequence terms (scan chunk states every 2048 steps, rstd) are left out. Units of the width."""
    d_inner, rank = expand * width, -(-width // 16)
    per_direction = 2 * d_inner + (rank + 2 * state_size) + 2 * state_size + d_inner
    return (2 * per_direction + d_inner + 2 * width) / width


def videomae_positions(model, frames: int, resolution: int, patch: int = 16):
    """VideoMAE's fixed sinusoidal table sized for this input (it has no interpolation of its own)."""
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    model = getattr(model, "videomae", model)
    tokens = frames * (resolution // patch) ** 2
    model.embeddings.position_embeddings = get_sinusoid_encoding_table(tokens, model.config.hidden_size)
    model.embeddings.patch_embeddings.image_size = (resolution, resolution)
    model.embeddings.patch_embeddings.num_frames = frames
    model.embeddings.patch_embeddings.num_patches = tokens


def scan_flops(model, frames: int, resolution: int) -> float:
    config = model.config
    length = 1 + frames * (resolution // 16) ** 2
    return 2 * config.num_hidden_layers * 9 * length * config.intermediate_size * config.state_size


def count_gflops(name: str, frames: int, resolution: int) -> float:
    """Forward GFLOPs. VideoMAE is counted with eager attention: the flop counter does not see the CPU SDPA kernel."""
    import importlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build(name, attention="eager").eval()
    modeling = importlib.import_module("modeling_stretchysnake.modeling_stretchysnake")
    real_scan = modeling.selective_scan
    if name == "stretchysnake":
        modeling.selective_scan = lambda u, *args, **kwargs: u  # count everything but the scan, added below
    else:
        videomae_positions(model, frames, resolution)
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.inference_mode():
            model(torch.randn(1, frames, 3, resolution, resolution))
    finally:
        modeling.selective_scan = real_scan
    flops = counter.get_total_flops()
    if name == "stretchysnake":
        flops += scan_flops(model, frames, resolution)
    return flops / 1e9


def measure(name: str, frames: int, resolution: int, mode: str, repeats: int, repeat_seconds: float,
            train_shape=(96, 4, 8)) -> dict:
    """Runs inside the child process."""
    import resource
    import statistics

    import torch

    if mode == "flops":
        return {"model": name, "frames": frames, "resolution": resolution, "mode": "fwd",
                "gflops": count_gflops(name, frames, resolution)}
    if mode == "saved":
        return saved_per_token_layer(name, frames, resolution, width=192)
    torch.manual_seed(0)
    width, depth, batch = train_shape if mode == "train" else (192, 24, 1)
    patch = train_patch(resolution) if mode == "train" else 16
    model = build(name, width=width, depth=depth, classifier=mode == "train", patch=patch)
    if mode == "fwd+bwd":
        model.train()
        model.gradient_checkpointing_enable()
    else:
        model.train(mode == "train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3) if mode == "train" else None
    labels = torch.arange(batch) % TRAIN_LABELS

    def run(t: int):
        if name == "videomae":
            videomae_positions(model, t, resolution, patch)
        pixel_values = torch.randn(batch, t, 3, resolution, resolution)
        if mode == "fwd":
            with torch.inference_mode():
                model(pixel_values)
        elif mode == "train":
            model(pixel_values, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            model(pixel_values).last_hidden_state.float().square().mean().backward()
            model.zero_grad(set_to_none=True)

    run(1)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    run(frames)
    times = [time.perf_counter() - start]  # the first full pass: memory, and the time if nothing follows
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    repeated = []
    while len(repeated) < repeats and sum(repeated) + times[0] <= repeat_seconds:
        start = time.perf_counter()
        run(frames)
        repeated.append(time.perf_counter() - start)
    gflops = count_gflops(name, frames, resolution) if mode == "fwd" else None
    return {"model": name, "frames": frames, "resolution": resolution, "mode": mode, "batch": batch,
            "seconds": statistics.median(repeated or times), "passes_timed": len(repeated) or 1,
            "first_pass_seconds": times[0], "peak_mib": peak_mib, "gflops": gflops}


def train_patch(resolution: int) -> int:
    """Training rows use patch 16, except the main job's 56 px (patch 14, a 4 x 4 grid, CLS at both ends)."""
    return 14 if resolution == 56 else 16


def child(argv) -> None:
    name, frames, resolution, mode, repeats, repeat_seconds, *train_shape = argv
    row = measure(name, int(frames), int(resolution), mode, int(repeats), float(repeat_seconds),
                  tuple(map(int, train_shape)))
    print("RESULT " + json.dumps(row), flush=True)


def run_child(name, frames, resolution, mode, timeout, repeats, repeat_seconds, train_shape=(96, 4, 8)) -> dict:
    command = [sys.executable, __file__, "--child", name,
               *map(str, (frames, resolution, mode, repeats, repeat_seconds, *train_shape))]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "frames": frames, "resolution": resolution, "mode": mode, "error": f"over {timeout}s"}
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"model": name, "frames": frames, "resolution": resolution, "mode": mode,
            "error": (result.stderr.strip().splitlines() or ["no output"])[-1][:120]}


def table(rows, key: str, axis: str, fixed: str) -> str:
    values = sorted({r[axis] for r in rows})
    modes = sorted({r["mode"] for r in rows if r.get(key) is not None} or {"fwd"},
                   key=("fwd", "fwd+bwd", "train", "saved").index)
    models = [m for m in (MODELS[0], UNFUSED, MODELS[1]) if any(r["model"] == m for r in rows)]
    ours = [m for m in models if m != "videomae"]
    lines = [f"{axis:>10} " + " ".join(f"{m + ' ' + mode:>30}" for mode in modes for m in models)
             + "   ratio (/ videomae)"]
    for value in values:
        cells, ratios = [], []
        for mode in modes:
            cell = {}
            for m in models:
                row = next((r for r in rows if r[axis] == value and r["model"] == m and r["mode"] == mode), None)
                v = None if row is None or "error" in row else row.get(key)
                cell[m] = v
                cells.append(f"{v:>30.2f}" if isinstance(v, (int, float))
                             else f"{(row or {}).get('error', '-')[:30]:>30}")
            for m in ours:
                reference = cell.get("videomae")
                if isinstance(cell[m], (int, float)) and isinstance(reference, (int, float)) and reference:
                    label = "unfused " if m == UNFUSED else ""
                    ratios.append(f"{label}{mode} {cell[m] / cell['videomae']:.2f}")
        lines.append(f"{value:>10} " + " ".join(cells) + "   " + ", ".join(ratios))
    return f"{key} ({fixed}):\n" + "\n".join(lines)


def growth(rows, key, axis, low, high, mode="fwd") -> str:
    out = []
    for m in MODELS:
        pick = {r[axis]: r.get(key) for r in rows if r["model"] == m and r["mode"] == mode and "error" not in r}
        if pick.get(low) and pick.get(high):
            out.append(f"{m} {key}({axis}={high}) / {key}({axis}={low}) = {pick[high] / pick[low]:.2f}")
    return "; ".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[96, 112, 160, 224, 288, 384])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd", "train", "saved"],
                        choices=["fwd", "fwd+bwd", "train", "saved"],
                        help="saved: floats autograd keeps per token per block (width 192, batch 1), at --saved_scales")
    parser.add_argument("--saved_scales", nargs="+", default=["8x112", "8x224", "32x224", "64x112"],
                        help="frames x resolution of the saved-activation rows")
    parser.add_argument("--unfused", action="store_true",
                        help="also measure StretchySnake with the old unfused mixer (fused_mixer=False)")
    parser.add_argument("--train_width", type=int, default=96)
    parser.add_argument("--train_depth", type=int, default=4)
    parser.add_argument("--train_batch", type=int, default=8)
    parser.add_argument("--train_frames", type=int, nargs="+", default=[8], help="training-step frames")
    parser.add_argument("--train_resolutions", type=int, nargs="+", default=[56, 112, 224],
                        help="training-step resolutions at 8 frames; 56 px is the main job's (patch 14, 4 x 4 grid)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after the first full one (median)")
    parser.add_argument("--repeat_seconds", type=float, default=30.0,
                        help="no further timed pass once the passes so far took this long")
    parser.add_argument("--json", help="also write all rows to this file")
    parser.add_argument("--gflops_only", action="store_true", help="count forward GFLOPs only (no timing)")
    args = parser.parse_args(argv)

    import torch

    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; batch 1, width 192, "
          f"depth 24, patch 16", flush=True)
    frame_rows, resolution_rows, train_rows = [], [], []
    train_shape = (args.train_width, args.train_depth, args.train_batch)
    if args.gflops_only:
        args.modes = ["flops"]
    models = (MODELS[0], UNFUSED, MODELS[1]) if args.unfused else MODELS
    saved_rows = []
    for mode in args.modes:
        if mode == "saved":
            for scale in args.saved_scales:
                frames, resolution = map(int, scale.split("x"))
                for name in models:
                    saved_rows.append(run_child(name, frames, resolution, mode, args.timeout, 0, 0))
                    print("  measured", saved_rows[-1], flush=True)
            continue
        if mode == "train":
            for frames, resolution in ((f, r) for f in args.train_frames for r in args.train_resolutions):
                for name in models:
                    train_rows.append(run_child(name, frames, resolution, mode, args.timeout, args.repeats,
                                                args.repeat_seconds, train_shape))
                    print("  measured", train_rows[-1], flush=True)
            continue
        for frames in args.frames:
            for name in models:
                frame_rows.append(run_child(name, frames, 224, mode, args.timeout, args.repeats, args.repeat_seconds))
                print("  measured", frame_rows[-1], flush=True)
        for resolution in args.resolutions:
            for name in models:
                resolution_rows.append(run_child(name, 8, resolution, mode, args.timeout, args.repeats,
                                                 args.repeat_seconds))
                print("  measured", resolution_rows[-1], flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(frame_rows + resolution_rows + train_rows + saved_rows, handle, indent=2)
    if saved_rows:
        for row in saved_rows:
            row["scale"] = f"{row['frames']}x{row['resolution']}"
        print()
        print(table(saved_rows, "saved_per_token_layer", "scale",
                    "saved floats per token per block / width, width 192"))
        print(f"official VideoMamba fused path (analytic, from mamba-ssm's source), width 192: "
              f"{official_fused_saved_per_token_layer(192):.2f}")

    print()
    for key in ("gflops",) if args.gflops_only else ("seconds", "peak_mib", "gflops"):
        if frame_rows:
            print(table(frame_rows, key, "frames", "224 px") + "\n")
            print(table(resolution_rows, key, "resolution", "8 frames") + "\n")
    if train_rows:
        for row in train_rows:
            row["scale"] = f"{row['frames']}x{row['resolution']}"
        shape = f"training step, width {args.train_width}, depth {args.train_depth}, batch {args.train_batch}"
        for key in ("seconds", "peak_mib"):
            print(table(train_rows, key, "scale", shape) + "\n")
    if not (frame_rows or resolution_rows):
        return
    if not args.gflops_only:
        print("time growth 8 -> 64 frames:", growth(frame_rows, "seconds", "frames", 8, 64))
        print("time 224 px / 112 px at 8 frames:", growth(resolution_rows, "seconds", "resolution", 112, 224))
    print("GFLOPs 224 px / 112 px at 8 frames:", growth(resolution_rows, "gflops", "resolution", 112, 224))
    print("GFLOPs 384 px / 96 px at 8 frames:", growth(resolution_rows, "gflops", "resolution", 96, 384))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
