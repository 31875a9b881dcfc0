"""Selective-scan backends side by side in one run: forward and forward+backward, small and large decays.

    python bench/scan.py                                   # L=1568 (8 frames x 196 tokens), d_inner=768, N=16
    python bench/scan.py --batches 1 --decays small --threads 1 --reference-backward-batches

CPU: the sequential reference, `chunked` (pure PyTorch) and `numba` (fused kernel). CUDA, where present:
`mamba_ssm` (if it imports), `triton` and `chunked`. Inputs look like a trained mixer's (small dt projections,
A = -(1..N)); the dt bias sets the decay regime: "small" dt ~ 0.01, "large" dt ~ 3 (per-step log-decays up to
48, which trained models reach). Backends are timed round-robin, each time the median of --repeats; the
reference (one Python step per token) once. The first call of the numba kernels, which compiles them or loads
them from numba's cache, is timed apart and kept out of the table. Deviations are the largest absolute error
relative to the reference tensor's largest magnitude, over the output and (fwd+bwd) all eight gradients.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from modeling_stretchysnake.selective_scan import (
    load_mamba_ssm_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from modeling_stretchysnake.selective_scan_fused import numba_available, selective_scan_fused, triton_available

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
TIME_STEPS = {"small": 0.01, "large": 3.0}


def make_inputs(batch, d_inner, length, n, time_step, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = dict(
        u=torch.randn(batch, d_inner, length, generator=generator),
        delta=torch.randn(batch, d_inner, length, generator=generator) * 0.1,
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d_inner, 1),
        B=torch.randn(batch, n, length, generator=generator),
        C=torch.randn(batch, n, length, generator=generator),
        D=torch.ones(d_inner),
        z=torch.randn(batch, d_inner, length, generator=generator),
        delta_bias=torch.full((d_inner,), math.log(math.expm1(time_step))),  # softplus(bias) = time_step
    )
    return {name: value.to(device) for name, value in inputs.items()}


def backends_for(device):
    if device.type == "cpu":
        backends = {"reference": selective_scan_reference, "chunked": selective_scan_chunked}
        if numba_available():
            backends["numba"] = selective_scan_fused
        return backends
    backends = {}
    mamba = load_mamba_ssm_scan()
    if mamba is not None:
        backends["mamba_ssm"] = lambda u, delta, A, B, C, D, z, delta_bias, delta_softplus: mamba(
            u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    if triton_available():
        backends["triton"] = selective_scan_fused
    backends["chunked"] = selective_scan_chunked
    return backends


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(fn, inputs, backward, device):
    """One timed call: seconds, output and (backward) the eight gradients."""
    leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
    synchronize(device)
    start = time.perf_counter()
    out = fn(**leaves, delta_softplus=True)
    if backward:
        out.square().mean().backward()
    synchronize(device)
    seconds = time.perf_counter() - start
    grads = [leaves[name].grad for name in GRAD_NAMES] if backward else None
    return seconds, out.detach(), grads


def relative_deviation(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp(min=1e-12)).item()


def first_call_seconds(device):
    """Time of the first fused call in this process (numba: compile once per machine, then a cache load)."""
    if device.type != "cpu" or not numba_available():
        return None
    tiny = make_inputs(1, 2, 3, 4, 0.01, device)
    return run(selective_scan_fused, tiny, True, device)[0]


def measure(device, batch, decay, args):
    """Rows (pass, backend, median seconds, deviation from the reference) for one input setting."""
    inputs = make_inputs(batch, args.d_inner, args.length, args.state, TIME_STEPS[decay], device)
    backends = backends_for(device)
    rows = []
    for backward in (False, True):
        pass_name = "fwd+bwd" if backward else "fwd"
        names = [n for n in backends if not (n == "reference" and backward
                                             and batch not in args.reference_backward_batches)]
        first = {name: run(backends[name], inputs, backward, device) for name in names}  # warm-up + results
        times = {name: [] for name in names if name != "reference"}
        for _ in range(args.repeats):  # round-robin, so load from other processes hits every backend alike
            for name in times:
                times[name].append(run(backends[name], inputs, backward, device)[0])
        reference = first.get("reference")
        for name in names:
            seconds = first[name][0] if name == "reference" else statistics.median(times[name])
            deviation = None
            if reference is not None:
                _, out, grads = first[name]
                deviation = relative_deviation(out, reference[1])
                if backward:
                    deviation = max([deviation] + [relative_deviation(g, r) for g, r in zip(grads, reference[2])])
            rows.append((pass_name, name, seconds, deviation))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1568)
    parser.add_argument("--d-inner", type=int, default=768)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--decays", nargs="+", choices=sorted(TIME_STEPS), default=["small", "large"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch (and numba) CPU threads")
    parser.add_argument("--reference-backward-batches", type=int, nargs="*", default=[1],
                        help="batches at which the reference's backward (minutes at L=1568) is run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"L {args.length}, d_inner {args.d_inner}, N {args.state}, float32; wall time, median of {args.repeats}")
    for device in devices:
        compile_seconds = first_call_seconds(device)
        if compile_seconds is not None:
            print(f"numba first call (compile, or load from numba's cache): {compile_seconds:.1f} s")

    print()
    print(f"{'device':<6} {'batch':>5} {'decay':<6} {'pass':<8} {'backend':<10} {'ms':>10} {'x reference':>12} "
          f"{'x chunked':>10} {'max rel. dev.':>14}")
    for device in devices:
        for batch in args.batches:
            for decay in args.decays:
                rows = measure(device, batch, decay, args)
                base = {(p, n): s for p, n, s, _ in rows}
                for pass_name, name, seconds, deviation in rows:
                    reference, chunked = base.get((pass_name, "reference")), base.get((pass_name, "chunked"))
                    cells = [f"{reference / seconds:>12.1f}" if reference else f"{'-':>12}",
                             f"{chunked / seconds:>10.1f}" if chunked else f"{'-':>10}",
                             f"{deviation:>14.1e}" if deviation is not None else f"{'-':>14}"]
                    print(f"{device.type:<6} {batch:>5} {decay:<6} {pass_name:<8} {name:<10} {seconds * 1e3:>10.1f} "
                          + " ".join(cells))


if __name__ == "__main__":
    main()
