"""The GPU check in one call: correctness, speed and memory of the CUDA path, and a short training run.

    python bench/gpu.py --out DIR             # on a CUDA machine: under 8 minutes on one H100/H200-class GPU
    python bench/gpu.py --out DIR --dry-run   # on CPU in seconds: tiny sizes, the Triton kernels under
                                              # TRITON_INTERPRET=1 (what CI runs, so the GPU run cannot fail on a
                                              # typo, an import or a shape)

Sections (each prints its table as it goes; a failing section is recorded and the next one runs):
1. correctness: every mixer path on the device (the fused op on Triton kernels; mamba-ssm's mamba_inner_fn if
   mamba-ssm imports; the unfused mixer on the chunked scan) against the float64 CPU mixer (unfused, exact scan),
   forward and every gradient (input and all parameters), in float32 (TF32 off; tolerance 1e-4 relative to the
   largest reference value) and under bf16 autocast (tolerance 1e-1), at small shapes and at L = 1 + 64 x 196;
2. speed and memory: forward (inference) and training-step time (AdamW, bf16 autocast) and peak memory of
   StretchySnake and transformers' VideoMAE (SDPA attention, tubelet 1, the same token grid) of equal width and
   depth, alternating, at 8 / 16 / 64 frames x 224 px and the static-tokens 98 / 392 px (patch R / 14);
3. the largest batch each model fits at 64 x 224 within --memory_budget_gib (doubling, then bisection; capped
   in time);
4. a short training run: the paper's static-tokens scales (frames {8, 16, 32, 64} x {98, 126, 224, 392}, one
   scale per step drawn by the package's ScaleSampler, bf16), on generated clips held in memory (the recipe's
   data path needs PyAV, which the GPU machine lacks), then a grid evaluation on held-out clips;
5. results.md (a section ready for bench/RESULTS.md) and results.json under --out.

The GPU machine has torch (CUDA), triton, transformers and accelerate, no internet. This script needs nothing
else: run it from the repository root (it puts the root on sys.path), or carry the package as a pure-Python
wheel, `pip wheel --no-deps -w wheels .` here and `pip install --no-deps wheels/stretchysnake-*.whl` there. numba,
datasets, decord and PyAV are not used; mamba-ssm is used only if it already imports.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

RESULTS: dict = {"sections": {}}
MARKDOWN: list[str] = []


def log(line: str = "") -> None:
    print(line, flush=True)
    MARKDOWN.append(line)


def section(name: str):
    """Run a section, recording its failure instead of stopping the run."""
    def wrap(function):
        def run(*args, **kwargs):
            log(f"\n### {name}\n")
            start = time.perf_counter()
            try:
                result = function(*args, **kwargs)
                RESULTS["sections"][name] = {"ok": True, "seconds": time.perf_counter() - start, "result": result}
            except Exception as error:  # recorded: the next section still runs
                import traceback

                traceback.print_exc()
                log(f"FAILED: {type(error).__name__}: {error}")
                RESULTS["sections"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            return RESULTS["sections"][name]
        return run
    return wrap


class Settings:
    """Sizes for the real run and the dry run."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        if dry_run:
            self.device = torch.device("cpu")
            self.correctness_shapes = ((2, 1), (2, 33), (1, 1 + 4 * 9))
            self.mixer_width = 16
            self.sizes = {"tiny": (24, 2)}
            self.scales = [(2, 28), (2, 14)]
            self.batch = {2: 2}
            self.max_batch_scale = (2, 28)
            self.train_frames, self.train_resolutions = (2, 4), (14, 28)
            self.train_steps, self.train_clips, self.eval_clips = 3, 2, 1
            self.repeats = 1
        else:
            self.device = torch.device("cuda")
            self.correctness_shapes = ((2, 1), (2, 33), (2, 300), (1, 1 + 64 * 196))
            self.mixer_width = 64
            self.sizes = {"tiny": (192, 24), "small": (384, 24), "middle": (576, 32)}
            self.scales = [(8, 224), (16, 224), (64, 224), (16, 98), (16, 392)]
            self.batch = {8: 16, 16: 8, 64: 2}
            self.max_batch_scale = (64, 224)
            self.train_frames, self.train_resolutions = (8, 16, 32, 64), (98, 126, 224, 392)
            self.train_steps, self.train_clips, self.eval_clips = 120, 40, 8
            self.repeats = 5


# ----- 1. correctness -----


def mixer_paths(settings):
    """(name, config overrides, autocast dtype or None) of every mixer path to check on the device."""
    from modeling_stretchysnake.selective_scan import load_mamba_inner_fn
    from modeling_stretchysnake.selective_scan_fused import triton_available

    paths = []
    if triton_available():  # in the dry run: the fused op with its Triton path forced on CPU tensors
        paths.append(("fused, triton", dict(scan_backend="auto" if settings.dry_run else "triton", fused_mixer=True)))
    if not settings.dry_run and load_mamba_inner_fn() is not None:
        paths.append(("fused, mamba-ssm", dict(scan_backend="mamba_ssm", fused_mixer=True)))
    paths.append(("unfused, chunked", dict(scan_backend="chunked", fused_mixer=False)))
    return [(name, overrides, dtype) for name, overrides in paths for dtype in (None, torch.bfloat16)]


def run_mixer(mixer, hidden, weights, autocast_dtype):
    hidden = hidden.detach().clone().requires_grad_(True)
    mixer.zero_grad()
    with torch.autocast(hidden.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        out = mixer(hidden)
    (out.float() * weights).sum().backward()
    grads = {name: p.grad.detach().double().cpu() for name, p in mixer.named_parameters()}
    grads["hidden"] = hidden.grad.detach().double().cpu()
    return out.detach().double().cpu(), grads


@section("1. Correctness against the float64 CPU mixer")
def check_correctness(settings):
    from modeling_stretchysnake import StretchySnakeConfig
    from modeling_stretchysnake.modeling_stretchysnake import StretchySnakeMixer

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    width = settings.mixer_width
    rows = []
    log("| path | dtype | batch x L | output rel. err. | worst gradient rel. err. | tolerance | ok |")
    log("|---|---|---|---|---|---|---|")
    for batch, length in settings.correctness_shapes:
        torch.manual_seed(0)
        config = StretchySnakeConfig(hidden_size=width, num_hidden_layers=1, scan_backend="chunked", fused_mixer=False)
        reference = StretchySnakeMixer(config).double()
        with torch.no_grad():
            for parameter in reference.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        hidden = torch.randn(batch, length, width, dtype=torch.float64)
        weights = torch.randn(batch, length, width, dtype=torch.float64)
        expected, expected_grads = run_mixer(reference, hidden, weights, None)
        for name, overrides, dtype in mixer_paths(settings):
            candidate = copy.deepcopy(reference).float().to(settings.device)
            candidate.config = copy.deepcopy(config)
            for key, value in overrides.items():
                setattr(candidate.config, key, value)
            with triton_on_cpu(settings.dry_run and "triton" in name):
                out, grads = run_mixer(candidate, hidden.float().to(settings.device),
                                       weights.float().to(settings.device), dtype)
            output_error = relative_error(out, expected)
            worst = max((relative_error(grads[k], expected_grads[k]), k) for k in expected_grads)
            # bf16: 8 mantissa bits, and the unfused mixer also runs its projections in bf16 under autocast
            tolerance = 1e-4 if dtype is None else 1e-1
            ok = output_error < tolerance and worst[0] < tolerance
            rows.append(dict(path=name, dtype=str(dtype or torch.float32), batch=batch, length=length,
                             output_error=output_error, worst_gradient=worst[1], worst_gradient_error=worst[0],
                             tolerance=tolerance, ok=ok))
            log(f"| {name} | {'bf16 autocast' if dtype else 'float32'} | {batch} x {length} | {output_error:.1e} | "
                f"{worst[0]:.1e} ({worst[1]}) | {tolerance:.0e} | {'yes' if ok else 'NO'} |")
    if not all(row["ok"] for row in rows):
        raise AssertionError("a mixer path is outside its tolerance (table above)")
    return rows


class triton_on_cpu:
    """In the dry run, route the fused op's kernels to Triton (under its interpreter) for CPU tensors."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        from modeling_stretchysnake import custom_ops

        self.module, self.saved = custom_ops, custom_ops.uses_numba
        if self.enabled:
            custom_ops.uses_numba = lambda tensor: False

    def __exit__(self, *exc):
        self.module.uses_numba = self.saved


def relative_error(actual, expected) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-30)).item()


# ----- 2. speed and memory -----


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")


def build_pair(width, depth, frames, resolution, device, num_labels=5):
    """StretchySnake and VideoMAE of equal width, depth and token grid (14 x 14 per frame; tubelet 1)."""
    from scaling import build, videomae_positions

    models = {}
    patch = resolution // 14
    for name in ("stretchysnake", "videomae"):
        torch.manual_seed(0)
        model = build(name, width=width, depth=depth, classifier=True, patch=patch)
        if name == "videomae":
            videomae_positions(model, frames, resolution, patch)
        models[name] = model.to(device)
    return models


def timed_steps(models, pixel_values, labels, repeats, device, train: bool):
    """Median ms and peak MiB per model, alternating between the models each repetition."""
    optimizers = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()} if train else {}
    times = {name: [] for name in models}
    peaks = {}
    for repetition in range(repeats + 1):
        for name, model in models.items():
            model.train(train)
            peak_reset(device)
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                if train:
                    model(pixel_values, labels=labels).loss.backward()
                else:
                    with torch.inference_mode():
                        model(pixel_values)
            if train:
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)
            synchronize(device)
            if repetition:  # the first pass compiles kernels and picks algorithms
                times[name].append((time.perf_counter() - start) * 1e3)
                peaks[name] = peak_mib(device)
    return {name: (statistics.median(values), peaks[name]) for name, values in times.items()}


@section("2. Speed and memory against VideoMAE (bf16, alternating)")
def check_speed(settings, deadline):
    rows = []
    log("| size | scale | batch | pass | StretchySnake ms | VideoMAE ms | time ratio | StretchySnake MiB | "
        "VideoMAE MiB | memory ratio |")
    log("|---|---|---|---|---|---|---|---|---|---|")
    for size, (width, depth) in settings.sizes.items():
        for frames, resolution in settings.scales:
            if rows and time.perf_counter() > deadline:
                log(f"(time limit reached: skipped the rest from {size} {frames}x{resolution})")
                return rows
            batch = settings.batch.get(frames, 2)
            models = build_pair(width, depth, frames, resolution, settings.device)
            pixel_values = torch.randn(batch, frames, 3, resolution, resolution, device=settings.device)
            labels = torch.arange(batch, device=settings.device) % 5
            for train in (False, True):
                try:
                    result = timed_steps(models, pixel_values, labels, settings.repeats, settings.device, train)
                except torch.cuda.OutOfMemoryError:
                    log(f"| {size} | {frames}x{resolution} | {batch} | {'train' if train else 'fwd'} | out of memory |")
                    torch.cuda.empty_cache()
                    continue
                (ours, our_peak), (theirs, their_peak) = result["stretchysnake"], result["videomae"]
                row = dict(size=size, frames=frames, resolution=resolution, batch=batch, train=train, ms=ours,
                           videomae_ms=theirs, peak_mib=our_peak, videomae_peak_mib=their_peak)
                rows.append(row)
                log(f"| {size} | {frames}x{resolution} | {batch} | {'train' if train else 'fwd'} | {ours:.1f} | "
                    f"{theirs:.1f} | {ours / theirs:.2f} | {our_peak:.0f} | {their_peak:.0f} | "
                    f"{our_peak / their_peak if their_peak == their_peak else float('nan'):.2f} |")
            del models
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


@section("3. Largest training batch at 64 x 224 within the memory budget")
def check_max_batch(settings, budget_gib, seconds_per_model):
    frames, resolution = settings.max_batch_scale
    results = {}
    device = settings.device
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gib * 2**30 / total))
    width, depth = next(iter(settings.sizes.values()))
    for name in ("stretchysnake", "videomae"):
        model = build_pair(width, depth, frames, resolution, device)[name].train()
        start = time.perf_counter()

        def fits(batch):
            try:
                pixel_values = torch.randn(batch, frames, 3, resolution, resolution, device=device)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    model(pixel_values, labels=torch.zeros(batch, dtype=torch.long, device=device)).loss.backward()
                model.zero_grad(set_to_none=True)
                return True
            except torch.cuda.OutOfMemoryError:
                model.zero_grad(set_to_none=True)
                return False
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()

        low, high = 0, 1
        largest = 4 if settings.dry_run else 4096
        while fits(high) and time.perf_counter() - start < seconds_per_model and high < largest:
            low, high = high, high * 2
        while high - low > 1 and time.perf_counter() - start < seconds_per_model:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        results[name] = low
        del model
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)
    log(f"width x depth {width} x {depth}, {frames} x {resolution}, bf16 autocast, forward + backward, budget "
        f"{budget_gib} GiB: StretchySnake batch {results['stretchysnake']}, VideoMAE batch {results['videomae']}")
    return results


# ----- 4. a short training run at the paper's scales -----


def render_clips(count_per_class, frames, size, seed):
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import ACTIONS, TASKS, render_action

    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for label, action in enumerate(ACTIONS):
        for _ in range(count_per_class):
            clips.append(torch.from_numpy(render_action(action, frames, size, rng, **TASKS["clear"])))
            labels.append(label)
    return torch.stack(clips), torch.tensor(labels)  # (N, T, H, W, 3) uint8, (N,)


def clips_at(clips, frames, resolution, device):
    """(N, T0, H, W, 3) uint8 -> normalised (N, frames, 3, R, R): frames spread over the clip, squash resize."""
    indices = torch.linspace(0, clips.shape[1] - 1, frames).round().long()
    x = clips[:, indices].to(device).permute(0, 1, 4, 2, 3).float() / 255  # (N, T, 3, H, W)
    n, t = x.shape[:2]
    x = F.interpolate(x.flatten(0, 1), size=(resolution, resolution), mode="bilinear", antialias=True,
                      align_corners=False)
    return ((x - 0.45) / 0.225).reshape(n, t, 3, resolution, resolution)


@section("4. A short training run at the paper's scales (static tokens, bf16)")
def check_training(settings):
    from modeling_stretchysnake import ScaleSampler, StretchySnakeConfig, StretchySnakeForVideoClassification

    device = settings.device
    native_frames, native_size = max(settings.train_frames), 128 if not settings.dry_run else 32
    train_clips, train_labels = render_clips(settings.train_clips, native_frames, native_size, seed=0)
    eval_clips, eval_labels = render_clips(settings.eval_clips, native_frames, native_size, seed=1)
    width, depth = next(iter(settings.sizes.values()))
    torch.manual_seed(0)
    config = StretchySnakeConfig(hidden_size=width, num_hidden_layers=depth, num_frames=max(settings.train_frames),
                                 num_labels=5, cls_position="ends", drop_path_rate=0.0, image_size=224,
                                 patch_size=16, scale_mode="static_tokens")
    model = StretchySnakeForVideoClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sampler = ScaleSampler("static_tokens", frames=settings.train_frames, resolutions=settings.train_resolutions)
    batch = 4 if not settings.dry_run else 2
    generator = torch.Generator().manual_seed(0)
    losses = []
    start = time.perf_counter()
    for step in range(settings.train_steps):
        scale = sampler.sample(step)
        pick = torch.randint(0, len(train_clips), (batch,), generator=generator)
        pixel_values = clips_at(train_clips[pick], scale.frames, scale.resolution, device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(pixel_values, labels=train_labels[pick].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    window = max(1, len(losses) // 5)
    first, last = statistics.mean(losses[:window]), statistics.mean(losses[-window:])
    log(f"{settings.train_steps} steps of batch {batch} in {seconds:.0f} s; mean loss of the first {window} steps "
        f"{first:.3f}, of the last {window} {last:.3f} ({'went down' if last < first else 'DID NOT go down'})")
    model.eval()
    grid = {}
    log("\n| frames \\ px | " + " | ".join(map(str, settings.train_resolutions)) + " |")
    log("|---|" + "---|" * len(settings.train_resolutions))
    for frames in settings.train_frames:
        cells = []
        for resolution in settings.train_resolutions:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(clips_at(eval_clips, frames, resolution, device)).logits
            accuracy = (logits.argmax(-1).cpu() == eval_labels).float().mean().item() * 100
            grid[f"{frames}x{resolution}"] = accuracy
            cells.append(f"{accuracy:.0f}")
        log(f"| {frames} | " + " | ".join(cells) + " |")
    return dict(losses=losses, first=first, last=last, seconds=seconds, grid=grid, went_down=last < first)


def environment(settings) -> dict:
    import transformers

    info = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
                device=torch.cuda.get_device_name(0) if settings.device.type == "cuda" else "cpu (dry run)",
                dry_run=settings.dry_run)
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    from modeling_stretchysnake.selective_scan import load_mamba_inner_fn

    info["mamba_ssm"] = load_mamba_inner_fn() is not None
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for results.md and results.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, Triton under its interpreter")
    parser.add_argument("--time_limit", type=float, default=240.0,
                        help="seconds for the speed section: no new cell starts after them")
    parser.add_argument("--memory_budget_gib", type=float, default=70.0)
    parser.add_argument("--max_batch_seconds", type=float, default=40.0, help="per model, in section 3")
    args = parser.parse_args(argv)
    settings = Settings(args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    RESULTS["environment"] = environment(settings)
    log(f"## bench/gpu.py on {RESULTS['environment']['device']}")
    log(f"\n{json.dumps(RESULTS['environment'])}")
    check_correctness(settings)
    check_speed(settings, deadline=time.perf_counter() + args.time_limit)
    check_max_batch(settings, args.memory_budget_gib, args.max_batch_seconds)
    check_training(settings)
    RESULTS["seconds"] = time.perf_counter() - start
    log(f"\nwhole run: {RESULTS['seconds']:.0f} s")
    (out / "results.md").write_text("\n".join(MARKDOWN) + "\n")
    (out / "results.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    failed = [name for name, value in RESULTS["sections"].items() if not value["ok"]]
    if failed:
        print(f"failed sections: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
