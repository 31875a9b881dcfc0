"""Do other CPUs compute the main job's bits? A few steps of it, hashed, on this CPU and on emulated ones.

    python bench/portability.py                       # this CPU: portable and native numerics; emulated AMD and
                                                      # Intel AVX2 CPUs where qemu-x86_64 is installed (apt install
                                                      # qemu-user): about 15 min each, two at a time
    python bench/portability.py --cpus native --output portability.json

The probe runs the main job's parts in a fresh process: renders five generated clips (hashes of the files), decodes
them with decord and PyAV at the main job's scales, trains the main job's model (its config, fused AdamW, label
smoothing) for four steps at three scales and evaluates it at 16 x 168: a hash of every parameter after every step
and of the logits. Each configuration runs it under recipes/portable_numerics.py's environment (or none, for
"native numerics"), directly on this CPU or under qemu-x86_64's emulation of another CPU model, whose CPUID the
libraries see (AMD EPYC-Milan: Zen 3, AVX2 and FMA, no AVX-512; Intel Haswell: AVX2 and FMA): MKL, torch and
numba pick their code for that CPU. Every configuration is compared with "this CPU, portable numerics".

Emulation checks the code each library picks and its arithmetic, not the hardware: qemu computes the
approximate-reciprocal instructions (rcpps, rsqrtps) exactly, where each CPU vendor has its own approximation, so
code that uses them differs under qemu from every real CPU (MKL's vector square root did, bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "recipes")]

import portable_numerics  # noqa: E402

CPUS = {"native": None, "amd-zen3": "EPYC-Milan-v1", "intel-avx2": "Haswell-v4"}

PROBE = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import numpy as np
    import torch
    sys.path[:0] = [sys.argv[2], os.path.join(sys.argv[2], "recipes")]
    torch.set_num_threads(1)
    from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification
    from modeling_stretchysnake import StretchySnakeVideoProcessor
    from modeling_stretchysnake.training.synthetic_actions import TASKS, generate_action_dataset
    from modeling_stretchysnake.video_decoding import read_video
    from train import EMBEDDED_MODEL

    def digest(x):
        x = x.detach().contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
        return hashlib.sha256(x.tobytes()).hexdigest()[:16]

    work = sys.argv[1]
    hashes = {}
    root = os.path.join(work, "clips")
    generate_action_dataset(root, {"train": 1, "test": 1}, seed=3, **TASKS["clear"])
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".mp4"))
    hashes["rendered files"] = digest(np.frombuffer(b"".join(open(f, "rb").read() for f in files), np.uint8))
    processor = StretchySnakeVideoProcessor(num_frames=8, resolution=56)
    clips = {}
    for decoder in ("decord", "pyav"):
        for frames, resolution, resize in ((8, 56, "squash"), (4, 84, "squash"), (4, 112, "squash"),
                                           (16, 168, "shortest")):
            decoded = [read_video(f, frames, resolution, resize, backend=decoder) for f in files]
            hashes[f"decoded {frames} x {resolution} ({resize}, {decoder})"] = digest(np.stack(decoded))
            clips[decoder, frames, resolution] = torch.stack(
                [processor.prepare_frames(clip, resolution, training=resize == "squash") for clip in decoded])
    torch.manual_seed(0)
    config = StretchySnakeConfig(**EMBEDDED_MODEL, num_labels=5, scale_mode="static_tokens")
    model = StretchySnakeForVideoClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05, fused=True)
    labels = torch.arange(len(files)) % 5
    for step, (frames, resolution) in enumerate([(8, 56), (4, 84), (4, 112), (8, 56)]):
        logits = model(clips["decord", frames, resolution]).logits
        torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1).backward()
        optimizer.step()
        optimizer.zero_grad()
        hashes[f"parameters after step {step + 1} ({frames} x {resolution})"] = digest(
            torch.cat([p.detach().flatten() for p in model.parameters()]))
    with torch.no_grad():
        hashes["logits at 16 x 168"] = digest(model(clips["decord", 16, 168]).logits)
    hashes["torch kernels"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps(hashes))
    """
)


def run_probe(cpu: str, numerics: str, work: Path, timeout: int) -> dict:
    """The probe's hashes in a fresh process: this CPU or qemu's model of another, portable or native numerics."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in portable_numerics.ENVIRONMENT:
        env.pop(name, None)
    if numerics == "portable":
        env.update(portable_numerics.ENVIRONMENT)
    command = [sys.executable, "-c", PROBE, str(work), str(ROOT)]
    if CPUS[cpu]:
        command = ["qemu-x86_64", "-cpu", CPUS[cpu], *command]
    shutil.rmtree(work, ignore_errors=True)
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"the probe failed on {cpu} ({numerics}):\n{result.stderr[-3000:]}")
    hashes = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{cpu}, {numerics} numerics: {time.time() - start:.0f} s", flush=True)
    return hashes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", nargs="+", choices=list(CPUS), default=list(CPUS))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per emulated run")
    parser.add_argument("--output", default=None, help="write every configuration's hashes here (JSON)")
    args = parser.parse_args(argv)

    runs = [("native", "portable"), ("native", "native")]
    emulated = [cpu for cpu in args.cpus if CPUS[cpu]]
    if emulated and shutil.which("qemu-x86_64") is None:
        print("qemu-x86_64 not found (apt install qemu-user): emulated CPUs skipped")
        emulated = []
    runs += [(cpu, "portable") for cpu in emulated]
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(2) as pool:  # two emulations at a time
        futures = {f"{cpu}, {numerics}": pool.submit(run_probe, cpu, numerics, Path(folder) / f"work{i}", args.timeout)
                   for i, (cpu, numerics) in enumerate(runs)}
        results = {name: future.result() for name, future in futures.items()}
    reference = results["native, portable"]
    lines = ["\n| configuration | torch kernels | items equal to this CPU's portable run | first that differs |",
             "|---|---|---|---|"]
    for name, hashes in results.items():
        items = [key for key in reference if key != "torch kernels"]
        equal = [key for key in items if hashes.get(key) == reference[key]]
        differing = [key for key in items if key not in equal]
        lines.append(f"| {name} | {hashes['torch kernels']} | {len(equal)} of {len(items)} | "
                     f"{differing[0] if differing else '-'} |")
    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
