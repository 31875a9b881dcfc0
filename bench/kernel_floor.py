"""The CPU mixer kernels against the machine's floor: each kernel's time as a multiple of what its exponentials
alone cost, measured side by side in one process.

    python bench/kernel_floor.py            # the main job's block and tiny at 8 x 224, at 1 and 2 threads
    python bench/kernel_floor.py --shapes main --threads 1 --repeats 21 --output floor.json

The floor: the numba kernels compute every decay exp(dt * A) with their own vectorised float32 exp (a Cephes
polynomial), so the bench times that exp on its own, compiled with the kernels' flags, over an L1-resident row per
task and spread over threads by the kernels' own ``_run_tasks``: exps per second at 1 and 2 threads. A kernel's
floor is its exp count (decays, softplus, sigmoids: log1p counted as one exp) over that rate; its ratio is its
measured time over its floor. A second floor, for kernels that do few exps (the convs): the bytes of its array
arguments (each read or written once) over the rate of a plain copy between arrays far larger than L2. The kernels
are timed inside the real mixer op (forward and backward of one block on random inputs shaped like the model's),
each call wrapped by a timer: CPU time at 1 thread (``process_time``, the caller runs every task), wall time at 2.
Rounds alternate the exp and copy probes and the mixer, medians over --repeats.

Where a scan's time goes (with 1 thread among --threads): its inner loops alone, the forward steps and one backward
chunk on one block of channels, in ns per channel, state and step, against the whole kernel's time; and its passes
(gathers, softplus, the steps or chunks, the gate, scatters, the dB/dC lanes): the kernel itself run with its first
pass, its first two, and so on (its ``parts`` argument), on the arguments and buffers of a real mixer round.

The GPU path (Triton) is listed by its counts, per call, for the GPU check (bench/gpu.py): exps, FLOPs and the bytes
each kernel must move at least, and their ratio (FLOPs per byte).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import dataclass

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as recipes/train.py: torch's idle OpenMP threads stop spinning

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import njit  # noqa: E402

from modeling_stretchysnake import bidirectional_mixer  # noqa: E402,F401  (registers the mixer ops)
from modeling_stretchysnake.selective_scan_fused import numba_kernels  # noqa: E402
from modeling_stretchysnake.selective_scan_numba import (  # noqa: E402
    _FAST,
    ALL_PASSES,
    BACKWARD_PASSES,
    FORWARD_PASSES,
    LANES,
    _buffers,
    _finish_block,
    _forward_steps,
    _gate_rows,
    _recompute_chunk,
    _reverse_steps,
    _run_tasks,
    _scan_backward_buffers,
    _scan_forward_buffers,
    _WideVectorCompiler,
    compiled,
    exp_vectorisable,
)

KERNELS = ("conv_silu_forward", "scan_forward", "scan_backward", "conv_silu_backward")


@dataclass(frozen=True)
class BlockShape:
    name: str
    batch: int
    hidden: int
    length: int  # tokens, CLS included
    state: int = 16
    conv: int = 4

    @property
    def d_inner(self) -> int:
        return 2 * self.hidden

    @property
    def rank(self) -> int:
        return math.ceil(self.hidden / 16)


SHAPES = {
    # the main job: width 96, 8 frames x 56 px with patch 14 (4 x 4 tokens a frame), CLS at both ends, batch 8
    "main": BlockShape("main job (96 wide, 8 x 56, batch 8)", batch=8, hidden=96, length=8 * 16 + 2),
    # tiny: width 192, 8 frames x 224 px, patch 16 (14 x 14 a frame), one CLS, batch 2
    "tiny": BlockShape("tiny 8 x 224 (192 wide, batch 2)", batch=2, hidden=192, length=8 * 196 + 1),
}


def exp_count(kernel: str, shape: BlockShape) -> int:
    """Exponentials (and log1p) of one call: a scan direction computes a decay per state and step, softplus (exp
    and log1p) and the gate's sigmoid per step; backward recomputes the decays, softplus and the gate's sigmoid
    (softplus' slope shares softplus' exp); each conv call computes a sigmoid per step for each of the two
    directions."""
    steps = shape.batch * shape.d_inner * shape.length
    return {"conv_silu_forward": 2 * steps, "scan_forward": steps * (shape.state + 3),
            "scan_backward": steps * (shape.state + 3), "conv_silu_backward": 2 * steps}[kernel]


def gpu_counts(kernel: str, shape: BlockShape) -> dict:
    """What one call of the Triton kernel must do at least: exps, FLOPs (an exp counted as one) and bytes moved
    (every input read once, every output written once, float32)."""
    steps = shape.batch * shape.d_inner * shape.length
    rows = shape.batch * shape.length * shape.state  # B or C
    checkpoints = shape.batch * shape.d_inner * math.ceil(shape.length / 128) * shape.state
    if kernel == "scan_forward":
        # per state and step: dt * A, exp, decay * h + dt x B (mul + fma), y += h C (fma); per step: softplus,
        # gate, D u
        flops = steps * (shape.state * 7 + 12)
        floats = 3 * steps + 2 * rows + steps + checkpoints  # u, delta, z; B, C; y; checkpoints
    else:  # scan_backward: recompute (as forward) and the reverse pass (about 12 per state and step)
        flops = steps * (shape.state * 19 + 20)
        floats = 4 * steps + 2 * rows + checkpoints + 3 * steps + 2 * rows  # grad_y, u, delta, z, B, C, ckpt; grads
    return {"exps": exp_count(kernel, shape), "flops": flops, "bytes": 4 * floats,
            "flops_per_byte": flops / (4 * floats)}


# ----- the floor: the kernels' exp, alone -----

@njit(nogil=True, fastmath=_FAST, error_model="numpy", pipeline_class=_WideVectorCompiler)
def _exp_rows(first, last, x, scales, out):
    for row in range(first, last):
        for scale in scales:  # a new argument every round, so nothing is hoisted out of the loop
            for i in range(x.shape[1]):
                out[row, i] += exp_vectorisable(x[row, i] * scale)


def exp_rate(threads: int, rounds: int = 400, width: int = 2048) -> float:
    """Exps per second of the kernels' exp at ``threads`` threads (rows of 2048 floats: 8 KiB, in L1)."""
    torch.set_num_threads(threads)
    tasks = 8 * threads
    x = np.linspace(-8.0, 0.0, tasks * width, dtype=np.float32).reshape(tasks, width)
    scales = np.linspace(0.5, 1.5, rounds).astype(np.float32)
    out = np.zeros_like(x)
    clock = time.process_time if threads == 1 else time.perf_counter
    start = clock()
    _run_tasks(_exp_rows, tasks, (x, scales, out))
    elapsed = clock() - start
    assert np.isfinite(out).all()
    return tasks * width * rounds / elapsed


@njit(nogil=True, fastmath=_FAST, error_model="numpy")
def _copy_rows(first, last, source, target):
    for row in range(first, last):
        for i in range(source.shape[1]):
            target[row, i] = source[row, i]


def memory_rate(threads: int, megabytes: int = 64, width: int = 1 << 16) -> float:
    """Bytes per second (read + written) of a plain copy between two arrays far larger than L2, spread over
    ``threads`` threads by the kernels' ``_run_tasks``: what a kernel that reads its inputs and writes its outputs
    once could reach at best."""
    torch.set_num_threads(threads)
    rows = megabytes * (1 << 20) // (4 * width)
    source = np.linspace(0.0, 1.0, rows * width, dtype=np.float32).reshape(rows, width)
    target = np.empty_like(source)
    _run_tasks(_copy_rows, rows, (source, target))  # compiles, and maps the target's pages
    clock = time.process_time if threads == 1 else time.perf_counter
    start = clock()
    _run_tasks(_copy_rows, rows, (source, target))
    elapsed = clock() - start
    assert np.array_equal(source, target)
    return 2 * source.nbytes / elapsed


def argument_bytes(args) -> int:
    """The bytes of a kernel call's array arguments: each input read once, each output written once (an output
    that is added to counted once too: a lower bound)."""
    return sum(a.size * a.itemsize for a in args if isinstance(a, np.ndarray))


# ----- where a scan kernel's time goes: its inner loops alone -----

@njit(fastmath=_FAST, error_model="numpy", pipeline_class=_WideVectorCompiler)
def _forward_loop(B, C, xs, time_steps, skips, decay_rates, state, inputs, ys):
    length = xs.shape[0]
    _forward_steps(B, C, 0, 0, length, length, False, xs, time_steps, skips, decay_rates, state, inputs, ys, 16)


@njit(fastmath=_FAST, error_model="numpy", pipeline_class=_WideVectorCompiler)
def _backward_loop(B, C, steps, xs, time_steps, slopes, gates, grad_ys, skips, decay_rates, states, decays, grad_state,
                   grad_A, sums_D, sums_bias, inputs, grad_u, grad_delta, grad_z, y_gated, grad_B_lanes, grad_C_lanes):
    # one checkpoint chunk as the backward kernel runs it: recompute, gate, walk back; then the per-step sums
    _recompute_chunk(B, C, 0, 0, steps, steps, False, xs, time_steps, skips, decay_rates, states, decays, inputs,
                     y_gated, 16)
    _gate_rows(0, steps, gates, grad_ys, y_gated, grad_z)
    _reverse_steps(B, C, 0, 0, steps, steps, False, xs, time_steps, grad_ys, decay_rates, states, decays, grad_state,
                   grad_A, grad_u, grad_delta, grad_B_lanes, grad_C_lanes, 16)
    _finish_block(steps, False, xs, time_steps, slopes, grad_ys, skips, sums_D, sums_bias, grad_u, grad_delta)


@njit(fastmath=_FAST, error_model="numpy", pipeline_class=_WideVectorCompiler)
def _walk_back_loop(B, C, steps, xs, time_steps, slopes, gates, grad_ys, skips, decay_rates, states, decays, grad_state,
                    grad_A, sums_D, sums_bias, inputs, grad_u, grad_delta, grad_z, y_gated, grad_B_lanes,
                    grad_C_lanes):
    _reverse_steps(B, C, 0, 0, steps, steps, False, xs, time_steps, grad_ys, decay_rates, states, decays, grad_state,
                   grad_A, grad_u, grad_delta, grad_B_lanes, grad_C_lanes, 16)


def inner_loops(shape: BlockShape, repeats: int) -> dict:
    """ns per channel, state and step of the scans' inner loops alone, one block of LANES channels on buffers the
    kernels would have gathered (1 thread, CPU time): the forward steps (exp, state update, y += h C), and one
    backward chunk (recompute the states and y, the gate, the walk back, then the per-step sums over the chunk's
    steps), and the chunk's walk back alone (its multiply-adds: the rest of the chunk is the recompute, with its
    exps). A kernel's time beyond loop x its steps is its passes per block: gathering and scattering the strided
    sequences, softplus and its slope, the forward's gate, the lanes' dB and dC sums."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    steps = min(shape.length, 128)  # one checkpoint chunk

    def lanes(*size, low=-1.0, high=1.0):
        return rng.uniform(low, high, (*size, LANES)).astype(np.float32)

    B, C = (rng.standard_normal((1, steps, shape.state)).astype(np.float32) for _ in range(2))
    xs, gates, grad_ys = lanes(steps), lanes(steps), lanes(steps)
    time_steps, slopes = lanes(steps, low=0.001, high=0.1), lanes(steps, low=0.4, high=0.6)
    decay_rates = -np.repeat(np.arange(1, shape.state + 1, dtype=np.float32)[:, None], LANES, 1)
    zeros = np.zeros((steps, LANES), dtype=np.float32)  # grad_u, grad_delta: the kernel zeroes them per block
    work = [lanes(steps + 1, shape.state), lanes(steps, shape.state), *(lanes(shape.state) for _ in range(2)),
            *(lanes() for _ in range(3)), zeros, zeros.copy(), lanes(steps), lanes(steps),
            *(lanes(steps, shape.state) for _ in range(2))]
    backward_args = [B, C, steps, xs, time_steps, slopes, gates, grad_ys, lanes(), decay_rates, *work]
    forward_args = [B, C, xs, time_steps, lanes(), decay_rates, lanes(shape.state), lanes(), lanes(steps)]
    backward_resets = (7, 12, 13, 14, 15, 17, 18, 21, 22)  # what a chunk changes, restored after each call
    probes = (("forward steps", _forward_loop, forward_args, (6,)),
              ("backward chunk", _backward_loop, backward_args, backward_resets),
              ("backward walk back", _walk_back_loop, backward_args, backward_resets))
    timings = {name: [] for name, *_ in probes}
    for _ in range(repeats):
        for name, loop, args, resets in probes:
            originals = [args[i].copy() for i in resets]
            loop(*args)  # compiles on the first round; then warms the caches
            for i, original in zip(resets, originals):
                args[i][...] = original  # the carried state and sums start where they did (no drift, no denormals)
            start = time.process_time()
            loop(*args)
            timings[name].append(time.process_time() - start)
            for i, original in zip(resets, originals):
                args[i][...] = original
    per_step = steps * shape.state * LANES
    return {name: 1e9 * statistics.median(t) / per_step for name, t in timings.items()}


# ----- the kernels, timed inside the mixer -----

def mixer_inputs(shape: BlockShape, seed: int = 0) -> dict:
    """Random inputs like an initialised block's: xz (batch, L, 2 d_inner), per direction conv, x_proj, dt_proj
    (dt in [0.001, 0.1] through its bias), A = -(1..N), D = 1; out_proj (hidden, d_inner)."""
    generator = torch.Generator().manual_seed(seed)
    d, n, r = shape.d_inner, shape.state, shape.rank

    def randn(*size, scale=1.0):
        return torch.randn(*size, generator=generator) * scale

    dt = torch.exp(torch.rand(2, d, generator=generator) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    return dict(
        xz=randn(shape.batch, shape.length, 2 * d),
        conv_weight=randn(2, d, shape.conv, scale=shape.conv ** -0.5), conv_bias=randn(2, d, scale=0.1),
        x_proj_weight=randn(2, r + 2 * n, d, scale=d ** -0.5), dt_proj_weight=randn(2, d, r, scale=r ** -0.5),
        dt_proj_bias=dt + torch.log(-torch.expm1(-dt)),  # softplus(bias) = dt
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(2, d, 1), D=torch.ones(2, d),
        out_proj_weight=randn(shape.hidden, d, scale=d ** -0.5),
    )


class KernelTimer:
    """Wraps the numba kernels the mixer calls and records each call's time (seconds) under (phase, name): the
    mixer's backward calls conv_silu_forward too (it recomputes the conv's outputs)."""

    def __init__(self, clock, keep_arguments=False):
        self.clock = clock
        self.phase = "forward"
        self.times = {}
        self.keep_arguments = keep_arguments
        self.arguments = {}  # (phase, name): each call's arguments, with keep_arguments
        self.kernels = numba_kernels()
        self.originals = {name: getattr(self.kernels, name) for name in KERNELS}

    def __enter__(self):
        for name, kernel in self.originals.items():
            setattr(self.kernels, name, self._timed(name, kernel))
        return self

    def __exit__(self, *exc):
        for name, kernel in self.originals.items():
            setattr(self.kernels, name, kernel)

    def _timed(self, name, kernel):
        def run(*args):
            start = self.clock()
            kernel(*args)
            self.times.setdefault((self.phase, name), []).append(self.clock() - start)
            if self.keep_arguments:
                self.arguments.setdefault((self.phase, name), []).append(args)

        return run


def mixer_round(inputs: dict, timer: KernelTimer) -> tuple[float, float]:
    """One forward and one backward of the mixer op; returns their times (the kernels' calls are in timer)."""
    ops = torch.ops.stretchysnake
    args = [inputs[k] for k in ("xz", "conv_weight", "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_proj_bias",
                                "A", "D", "out_proj_weight")]
    timer.phase = "forward"
    start = timer.clock()
    out, checkpoints = ops.bidirectional_mixer_fwd(*args)
    middle = timer.clock()
    timer.phase = "backward"
    ops.bidirectional_mixer_bwd(torch.ones_like(out), *args, checkpoints)
    return middle - start, timer.clock() - middle


def measure(shapes, threads: int, repeats: int) -> dict:
    """Round-robin: the exp probe, then one mixer forward + backward per shape; medians per kernel call."""
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    inputs = {key: mixer_inputs(SHAPES[key]) for key in shapes}
    timers = {key: KernelTimer(clock, keep_arguments=True) for key in shapes}
    mixer_times = {key: [] for key in shapes}
    rates, memory_rates = [], []
    exp_rate(threads, rounds=10)  # compiles the probe
    call_bytes = {}
    for key in shapes:  # warm-up: the kernels' first call compiles or loads them
        with timers[key]:
            mixer_round(inputs[key], timers[key])
        call_bytes[key] = {label: sum(map(argument_bytes, calls)) for label, calls in timers[key].arguments.items()}
        timers[key].times, timers[key].arguments, timers[key].keep_arguments = {}, {}, False
    for _ in range(repeats):
        rates.append(exp_rate(threads))
        memory_rates.append(memory_rate(threads))
        for key in shapes:
            torch.set_num_threads(threads)
            with timers[key]:
                mixer_times[key].append(mixer_round(inputs[key], timers[key]))
    rate = statistics.median(rates)
    bandwidth = statistics.median(memory_rates)
    results = {"threads": threads, "exp_per_second": rate, "bytes_per_second": bandwidth, "shapes": {}}
    for key in shapes:
        shape = SHAPES[key]
        kernels = {}
        for (phase, name), calls in timers[key].times.items():
            per_round = len(calls) // repeats  # the scans run once per direction
            seconds = statistics.median(sum(calls[i:i + per_round]) for i in range(0, len(calls), per_round))
            exps = exp_count(name, shape) * per_round
            moved = call_bytes[key][(phase, name)]
            kernels[f"{phase}: {name}"] = {"phase": phase, "name": name, "calls_per_round": per_round,
                                           "ms": 1e3 * seconds, "exps": exps, "floor_ms": 1e3 * exps / rate,
                                           "ratio": seconds * rate / exps, "bytes": moved,
                                           "memory_floor_ms": 1e3 * moved / bandwidth,
                                           "memory_ratio": seconds * bandwidth / moved}
        forward = statistics.median(t[0] for t in mixer_times[key])
        backward = statistics.median(t[1] for t in mixer_times[key])
        results["shapes"][key] = {"shape": shape.__dict__ | {"name": shape.name}, "kernels": kernels,
                                  "mixer_forward_ms": 1e3 * forward, "mixer_backward_ms": 1e3 * backward}
    return results


def scan_passes(shape: BlockShape, repeats: int) -> dict:
    """ms per mixer call (both directions) of each scan kernel and of each of its passes, on the arguments and
    buffers of one real mixer round (1 thread, CPU time, round-robin): the kernel runs its first pass, then its
    first two, and so on to all of them (a pass alone would run on what it left itself: the gate scales grad_y in
    place), and a pass's time is what it adds to the ones before it."""
    torch.set_num_threads(1)
    timer = KernelTimer(time.process_time, keep_arguments=True)
    with timer:
        mixer_round(mixer_inputs(shape), timer)
    scans = {"scan_forward": (compiled("scan_forward", np.float32, shape.state), _scan_forward_buffers,
                              FORWARD_PASSES, lambda args: args[0].shape[0] * -(-args[0].shape[1] // LANES)),
             "scan_backward": (compiled("scan_backward", np.float32, shape.state), _scan_backward_buffers,
                               BACKWARD_PASSES, lambda args: args[22].shape[0] * args[22].shape[1])}
    runs = {}  # label: (kernel name, callable running every call of a round)
    for (phase, name), calls in timer.arguments.items():
        if name not in scans:
            continue
        kernel, buffer_spec, passes, task_count = scans[name]
        calls = [(args, _buffers(kernel, buffer_spec(*args)), task_count(args)) for args in calls]

        def run_passes(parts, calls=calls, kernel=kernel):
            for args, buffers, tasks in calls:
                kernel(0, tasks, parts, *args, *buffers)

        runs[(name, "the kernel")] = lambda run=run_passes: run(ALL_PASSES)
        for count in range(1, len(passes) + 1):  # the first pass, the first two, ..., all
            runs[(name, count)] = lambda run=run_passes, parts=(1 << count) - 1: run(parts)
    for run in runs.values():  # warms the buffers
        run()
    timings = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.process_time()
            run()
            timings[label].append(time.process_time() - start)
    ms = {label: 1e3 * statistics.median(values) for label, values in timings.items()}
    results = {}
    for name, (*_, passes, _) in scans.items():
        rows = results[name] = {"the kernel": ms[(name, "the kernel")],
                                "all passes (the parts mask)": ms[(name, len(passes))]}
        for count, label in enumerate(passes, 1):
            rows[label] = ms[(name, count)] - (ms[(name, count - 1)] if count > 1 else 0.0)
    return results


def passes_report(passes: dict) -> str:
    lines = ["\nWhere the scans' time goes, pass by pass (1 thread, CPU time): the kernel's task loop re-run with its "
             "first passes, on the arguments and buffers of a mixer round; a pass's ms is what it adds to those before "
             "it, per call of the mixer (both directions)",
             "| shape | kernel | pass | ms | share of the kernel |", "|---|---|---|---|---|"]
    for key, kernels in passes.items():
        for name, rows in kernels.items():
            for label, ms in rows.items():
                lines.append(f"| {SHAPES[key].name} | {name} | {label} | {ms:.2f} | {ms / rows['the kernel']:.0%} |")
    return "\n".join(lines)


def report(all_results, shapes) -> str:
    lines = []
    for results in all_results:
        threads = results["threads"]
        lines.append(f"\n{threads} thread{'s' * (threads > 1)}: the kernels' exp runs at "
                     f"{results['exp_per_second'] / 1e9:.2f} G/s, a copy moves {results['bytes_per_second'] / 1e9:.1f}"
                     f" GB/s ({'CPU' if threads == 1 else 'wall'} time)")
        lines.append("| shape | kernel | calls | ms | exps (M) | exp floor ms | ms / floor | MB moved | "
                     "memory floor ms | ms / memory floor |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for key in shapes:
            shape_results = results["shapes"][key]
            for name, k in shape_results["kernels"].items():
                lines.append(f"| {SHAPES[key].name} | {name} | {k['calls_per_round']} | {k['ms']:.2f} | "
                             f"{k['exps'] / 1e6:.2f} | {k['floor_ms']:.2f} | {k['ratio']:.2f} | "
                             f"{k['bytes'] / 1e6:.1f} | {k['memory_floor_ms']:.2f} | {k['memory_ratio']:.2f} |")
            kernel_ms = {phase: sum(k["ms"] for k in shape_results["kernels"].values() if k["phase"] == phase)
                         for phase in ("forward", "backward")}
            for direction in ("forward", "backward"):
                total = shape_results[f"mixer_{direction}_ms"]
                lines.append(f"| {SHAPES[key].name} | mixer op {direction} (kernels {kernel_ms[direction]:.2f} ms, "
                             f"{kernel_ms[direction] / total:.0%}) | 1 | {total:.2f} | | | | | | |")
    lines.append("\nGPU (Triton) kernels, counts per call (float32; bytes: each input read and each output written "
                 "once):")
    lines.append("| shape | kernel | exps (M) | GFLOP | MB | FLOP / byte |")
    lines.append("|---|---|---|---|---|---|")
    for key in shapes:
        for name in ("scan_forward", "scan_backward"):
            c = gpu_counts(name, SHAPES[key])
            lines.append(f"| {SHAPES[key].name} | {name} | {c['exps'] / 1e6:.2f} | {c['flops'] / 1e9:.3f} | "
                         f"{c['bytes'] / 1e6:.2f} | {c['flops_per_byte']:.1f} |")
    return "\n".join(lines)


def loops_report(loops: dict, all_results: list) -> str:
    """The scans' inner loops against the whole kernels (1 thread, CPU time): what the passes per block cost."""
    (one_thread,) = (results for results in all_results if results["threads"] == 1)
    exp_ns = 1e9 / one_thread["exp_per_second"]
    lines = ["\nWhere the scans' time goes (1 thread, CPU time): their inner loops alone, one block of "
             f"{LANES} channels on L1-resident buffers, ns per channel, state and step (the exp floor: one exp)",
             "| shape | loop | ns / state step | x exp floor | loop x the kernel's steps, ms | kernel ms | "
             "loop share |", "|---|---|---|---|---|---|---|"]
    for key, loop in loops.items():
        shape = SHAPES[key]
        state_steps = 2 * shape.batch * shape.d_inner * shape.length * shape.state  # both directions
        for name, kernel in (("forward steps", "forward: scan_forward"), ("backward chunk", "backward: scan_backward"),
                             ("backward walk back", "backward: scan_backward")):
            loop_ms = loop[name] * state_steps / 1e6
            kernel_ms = one_thread["shapes"][key]["kernels"][kernel]["ms"]
            lines.append(f"| {shape.name} | {name} | {loop[name]:.3f} | {loop[name] / exp_ns:.2f} | {loop_ms:.2f} | "
                         f"{kernel_ms:.2f} | {loop_ms / kernel_ms:.0%} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["main", "tiny"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=11, help="rounds (medians)")
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']}; medians of {args.repeats} "
          f"rounds", flush=True)
    all_results = [measure(args.shapes, threads, args.repeats) for threads in args.threads]
    print(report(all_results, args.shapes))
    loops = {}
    if 1 in args.threads:  # against the 1-thread kernels' CPU time
        loops = {key: inner_loops(SHAPES[key], args.repeats) for key in args.shapes}
        print(loops_report(loops, all_results))
    passes = {key: scan_passes(SHAPES[key], args.repeats) for key in args.shapes}
    print(passes_report(passes))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"kernels": all_results, "inner_loops_ns_per_state_step": loops, "scan_passes_ms": passes}, f,
                      indent=1)


if __name__ == "__main__":
    main()
