"""Selective-scan backends side by side: sequential reference vs chunked pure-PyTorch vs mamba-ssm (CUDA).

    python bench/scan.py                    # L=1568 (8 frames x 196 tokens), d_inner=768, N=16, batch 1
    python bench/scan.py --length 392 --skip-reference-backward

Inputs look like a trained mixer's: dt bias from Mamba's log-uniform init, small dt projections, A = -(1..N).
Prints per-backend times, the speed-up over the reference measured in this run, and the largest deviation
from the reference (outputs and input gradients, relative to each tensor's largest magnitude).
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from modeling_stretchysnake.selective_scan import (
    load_mamba_ssm_scan,
    selective_scan_chunked,
    selective_scan_reference,
)

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch, d_inner, length, n, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(d_inner, generator=generator) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = dict(
        u=torch.randn(batch, d_inner, length, generator=generator),
        delta=torch.randn(batch, d_inner, length, generator=generator) * 0.1,
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d_inner, 1),
        B=torch.randn(batch, n, length, generator=generator),
        C=torch.randn(batch, n, length, generator=generator),
        D=torch.ones(d_inner),
        z=torch.randn(batch, d_inner, length, generator=generator),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )
    return {name: value.to(device) for name, value in inputs.items()}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(fn, inputs, backward):
    leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True)
    grads = None
    if backward:
        out.square().mean().backward()
        grads = [leaves[name].grad for name in GRAD_NAMES]
    return out.detach(), grads


def timed(fn, inputs, backward, repeats, device):
    run(fn, inputs, backward)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = run(fn, inputs, backward)
    synchronize(device)
    return (time.perf_counter() - start) / repeats, result


def relative_deviation(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp(min=1e-12)).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1568)
    parser.add_argument("--d-inner", type=int, default=768)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--skip-reference-backward", action="store_true", help="the reference backward is slow")
    args = parser.parse_args(argv)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"batch {args.batch}, L {args.length}, d_inner {args.d_inner}, N {args.state}, float32")
    rows = []
    for device in devices:
        inputs = make_inputs(args.batch, args.d_inner, args.length, args.state, device)
        backends = {
            "reference": selective_scan_reference,
            "chunked": lambda **kw: selective_scan_chunked(**kw, chunk_size=args.chunk_size),
        }
        mamba = load_mamba_ssm_scan()
        if device.type == "cuda" and mamba is not None:
            backends["mamba_ssm"] = lambda **kw: mamba(
                kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], z=kw["z"],
                delta_bias=kw["delta_bias"], delta_softplus=True,
            )
        for backward in (False, True):
            pass_name = "fwd+bwd" if backward else "fwd"
            results = {}
            for name, fn in backends.items():
                if name == "reference" and backward and args.skip_reference_backward:
                    continue
                # The reference is one Python step per token: time it once.
                repeats = 1 if name == "reference" else args.repeats
                results[name] = timed(fn, inputs, backward, repeats, device)
            reference = results.get("reference")
            for name, (seconds, (out, grads)) in results.items():
                speedup = deviation = None
                if reference is not None:
                    speedup = reference[0] / seconds
                    deviation = relative_deviation(out, reference[1][0])
                    if backward:
                        deviation = max([deviation] + [relative_deviation(g, r) for g, r in zip(grads, reference[1][1])])
                rows.append((device.type, pass_name, name, seconds, speedup, deviation))

    print()
    print(f"{'device':<6} {'pass':<8} {'backend':<10} {'ms':>10} {'x reference':>12} {'max rel. dev.':>14}")
    for device, pass_name, name, seconds, speedup, deviation in rows:
        speed = f"{speedup:>12.1f}" if speedup is not None else f"{'-':>12}"
        dev = f"{deviation:>14.1e}" if deviation is not None else f"{'-':>14}"
        print(f"{device:<6} {pass_name:<8} {name:<10} {seconds * 1e3:>10.1f} {speed} {dev}")


if __name__ == "__main__":
    main()
