"""Fused Mamba-1 selective scan for CPU tensors, compiled with numba (forward and backward).

Same function as ``selective_scan_reference`` (mamba-ssm ``selective_scan_fn`` semantics), computed with the
exact per-step recurrence, so any decay is handled without splitting or overflow:

    dt_t = softplus(delta_t + delta_bias)        h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = (<h_t, C_t> + D * u_t) * silu(z_t)

Layout: the channels are the vectors. A task takes a block of LANES (16) channels of one batch item and gathers its
sequences into (L, LANES) buffers; the loop over L advances the (N, LANES) state with every operation a vector over
the block's channels, so ``y = sum_n C h`` is a vertical sum (no horizontal reduction per step) and the exps of the
16 channels run side by side (polynomial ``exp`` / ``log1p`` that LLVM can vectorise: numba's ``math.exp`` is a
scalar libm call, ~10x slower here). The state before every ``checkpoint_every``-th step is saved; backward
recomputes one such chunk at a time into a (chunk + 1, N, LANES) buffer and walks it back, so training memory is
O(L * d_inner) rather than O(L * d_inner * N). Gradients of B and C are summed per lane over the blocks of a group of
channels, then over the lanes in order, into (batch, groups, L, N) buffers reduced afterwards in torch: no atomics,
deterministic for any thread count. The depthwise conv + SiLU kernels keep one channel per task, vectorised over L.

Three things keep LLVM vectorising well, all measured: the kernels' working buffers come in as arguments (numba
marks a kernel's arguments ``noalias``, never the arrays it allocates, and without it the per-lane sums stay in
memory); every per-element index is one numba can prove non-negative (it wraps any other, such as ``t + K - 1``, and
the wrap keeps a loop scalar: the conv backward ran 4x slower so); and the scans ask for 512-bit vectors, a block's
16 lanes in one register (``_WideVectorCompiler``; LLVM's default on AVX-512 CPUs is two 256-bit halves). A loop
over a block's lanes that holds an exp or a branch is written flat over the (L, LANES) buffer: LLVM's loop
vectoriser if-converts it, while the 16-wide inner loop of a (t, c) nest, unrolled, is left to the SLP vectoriser,
which does not (the backward gate ran 5x slower so); and each step's work sits in the loop over N (the backward once
summed y over N in a loop of its own, which LLVM vectorised over N with a horizontal sum per lane).

The kernels are compiled when this module is first imported, for float32 and float64 (``cache=True``: once per
machine, then loaded from numba's cache).

Threads: each kernel is one sequential numba function over a range of independent tasks (``nogil``), and
``_run_tasks`` spreads the tasks over ``torch.get_num_threads()`` Python threads, each with its own buffers. numba's
own ``parallel=True`` is not used: it compiles a prange body twice (once on its own, once linked into its caller and
optimised again), and which copy runs depends on whether the kernel was just compiled or loaded from the cache. With
the fast-math flags the two copies vectorise the sums differently, so a freshly compiled kernel and a cached one
differed in the last bits (bench/RESULTS.md, "Determinism"). A sequential kernel has one compiled body, the one numba
caches; for the same reason every helper is inlined (``inline="always"``): a helper compiled as a function of its own
is linked into its caller and optimised again, and the fresh and the cached kernel differed in the last bits again.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


try:  # transformers' remote-code import check skips try blocks: numba stays optional for Hub users
    import numba  # noqa: F401
    from numba import njit
    from numba.core import compiler, lowering, typed_passes, types
    from numba.core.compiler_machinery import register_pass
    from numba.extending import intrinsic, overload

    from .numba_cache import compile_kernels, register_under, shared_module_name, use_shared_cache
except ImportError as error:
    raise ImportError("the fused CPU selective scan needs numba (pip install numba)") from error

# Every copy of this file (the package's, each saved model folder's) defines its kernels under one module name taken
# from the file's content, with one cache folder per content: what one copy compiled, every copy loads (numba_cache).
_IMPORT_NAME = __name__
SHARED_NAME = shared_module_name(__file__)
if register_under(SHARED_NAME, _IMPORT_NAME):
    __name__ = SHARED_NAME  # noqa: A001  (the functions below take their module name from it)
    CACHE_FOLDER = use_shared_cache(SHARED_NAME)
else:
    CACHE_FOLDER = None


def shared_copy():
    """The copy of this module whose kernels this process runs: the first imported with this file's content."""
    return sys.modules.get(SHARED_NAME) or sys.modules[_IMPORT_NAME]


LANES = 16  # channels computed side by side, as the lanes of one vector (a task is a block of them)
GRADIENT_TASKS = 32  # backward: about this many (batch, channel group) tasks, at most 16 groups per batch item


def gradient_groups(batch: int, d_inner: int) -> int:
    """Channel groups per batch item in the CPU backward, each a run of blocks of LANES channels: each keeps its own
    (L, N) partial sums of dB and dC (summed afterwards, so no atomics and the same result for any thread count).
    Enough groups to spread the work over GRADIENT_TASKS tasks, few enough that the partials stay small next to the
    activations at large batch. No group is left without blocks: each task zeroes and sums its (L, N, LANES) per-lane
    partials whether it has blocks or not (at tiny's batch 2 and 24 blocks, 16 groups of ceil(24 / 16) = 2 blocks
    left 4 empty tasks, each moving 6.4 MB for nothing)."""
    blocks = -(-d_inner // LANES)
    per_group = -(-blocks // max(1, min(blocks, 16, -(-GRADIENT_TASKS // batch))))
    return -(-blocks // per_group)


# the passes of a scan kernel's task, in order (bench/kernel_floor.py times them one by one); ALL_PASSES runs them all
FORWARD_PASSES = ("gather u, delta", "block parameters, softplus", "steps (and checkpoints)", "gate (gather z, silu)",
                  "scatter y")
BACKWARD_PASSES = ("zero and sum the dB, dC lanes (per task)", "gather u, delta, grad_y, z",
                   "block parameters, softplus and slope, zeroing", "chunks (recompute, gate, walk back)",
                   "finish block (grad_u, grad_delta; A, D and bias gradients)",
                   "scatter grad_u, grad_delta, grad_z, y")
ALL_PASSES = -1  # every bit set

VECTOR_BITS = LANES * 32  # a block's LANES float32 lanes are one vector register of this width (AVX-512: one zmm)


class _WideVectorLower(lowering.Lower):
    """numba's lowering, with the kernel's LLVM function asking for VECTOR_BITS-wide vectors: LLVM's tuning for
    AVX-512 CPUs prefers 256-bit vectors (``prefer-256-bit``), so the 16 lanes of a block took two ymm registers per
    operation (the kernels ran 1.2-1.3x slower, the exp probe 1.5x). A function attribute, as clang's
    ``-mprefer-vector-width``: it changes these kernels only, not other numba code in the process. Without AVX-512
    LLVM uses the widest vectors the CPU has, as before."""

    def setup_function(self, fndesc):
        super().setup_function(fndesc)
        set.add(self.function.attributes, f'"prefer-vector-width"="{VECTOR_BITS}"')  # llvmlite knows no string attrs


@register_pass(mutates_CFG=True, analysis_only=False)
class _WideVectorLowering(typed_passes.NativeLowering):
    # numba's pass registry wants unique names: a second copy of this module (a saved model's code, loaded with
    # trust_remote_code next to the installed package) registers its own pass under the name it was imported as
    _name = f"wide_vector_lowering ({_IMPORT_NAME})"

    @property
    def lowering_class(self):
        return _WideVectorLower


class _NoAliasCompiler(compiler.Compiler):
    """numba's pipeline with the array arguments marked ``noalias``, as numba marks a ``parallel=True`` loop body's
    (the kernels never pass one array twice): without it LLVM must assume that every store may change any input and
    leaves the backward scan's loop over N scalar (1.9x the time)."""

    def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
        flags = flags.copy()
        flags.noalias = True
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


class _WideVectorCompiler(_NoAliasCompiler):
    """``_NoAliasCompiler`` whose lowering asks for vectors as wide as a block of lanes (``_WideVectorLower``): the
    scan kernels. The conv kernels keep LLVM's choice: they are bound by memory, not arithmetic (no faster with
    512-bit vectors), and LLVM vectorises their sums over L in an order that follows the vector width, so wider
    vectors would change their gradients' last bits (and every trained model's numbers) for nothing."""

    def define_pipelines(self):
        pipeline = compiler.DefaultPassBuilder.define_nopython_pipeline(self.state)
        pipeline.passes = [(_WideVectorLowering if stage is typed_passes.NativeLowering else stage, description)
                           for stage, description in pipeline.passes]
        pipeline.finalize()
        return [pipeline]


_FAST = {"reassoc", "contract", "nsz", "arcp"}  # reassociation lets LLVM vectorise the sums over N
_EXACT_ORDER = {"contract"}  # the polynomials' range reductions rely on their operation order


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


def exp_vectorisable(x):
    """``exp`` that LLVM can vectorise inside numba loops (float32: Cephes polynomial; float64: math.exp)."""
    return math.exp(x)


@overload(exp_vectorisable, jit_options={"fastmath": _EXACT_ORDER})
def _exp_vectorisable_overload(x):
    if x == types.float32:

        def exp_float32(x):
            # Cody-Waite range reduction x = k ln2 + r, |r| <= ln2 / 2; 2^k built in the float's exponent bits.
            if x < np.float32(-87.33):
                return np.float32(0.0)  # below float32's normal range: exp underflows
            x = min(x, np.float32(88.72))
            k = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
            r = x - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            p = p * r * r + r + np.float32(1.0)
            return p * _int32_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))

        return exp_float32

    def exp_other(x):
        return math.exp(x)

    return exp_other


def log1p_vectorisable(x):
    """``log1p`` for x >= 0 that LLVM can vectorise (float32: Cephes polynomial; float64: math.log1p)."""
    return math.log1p(x)


@overload(log1p_vectorisable, jit_options={"fastmath": _EXACT_ORDER})
def _log1p_vectorisable_overload(x):
    if x == types.float32:

        def log1p_float32(x):
            w = np.float32(1.0) + x
            # log(w) for w in [1, 2]: reduce to m in [sqrt(1/2), sqrt(2)), then Cephes' logf polynomial in f = m - 1.
            big = w > np.float32(1.41421356)
            m = w * np.float32(0.5) if big else w
            k = np.float32(1.0) if big else np.float32(0.0)
            f = m - np.float32(1.0)
            p = np.float32(7.0376836292e-2)
            p = p * f - np.float32(1.1514610310e-1)
            p = p * f + np.float32(1.1676998740e-1)
            p = p * f - np.float32(1.2420140846e-1)
            p = p * f + np.float32(1.4249322787e-1)
            p = p * f - np.float32(1.6668057665e-1)
            p = p * f + np.float32(2.0000714765e-1)
            p = p * f - np.float32(2.4999993993e-1)
            p = p * f + np.float32(3.3333331174e-1)
            f2 = f * f
            log_w = f + (p * f * f2 - k * np.float32(2.12194440e-4) - np.float32(0.5) * f2) + k * np.float32(0.693359375)
            # w = 1 + x rounds x; rescaling by x / (w - 1) restores log1p's accuracy for small x.
            return x if w == np.float32(1.0) else log_w * (x / (w - np.float32(1.0)))

        return log1p_float32

    def log1p_other(x):
        return math.log1p(x)

    return log1p_other


def gate_gradient(grad_y, y, sigmoid, gate, one):
    """dLoss/dz of y silu(z): ((grad_y y) sigmoid) (1 + z (1 - sigmoid)), multiplied in this order whatever loop it
    is inlined into (with the kernels' fast-math flags LLVM may order the product differently in each loop)."""
    return grad_y * y * sigmoid * (one + gate * (one - sigmoid))


@overload(gate_gradient, jit_options={"fastmath": _EXACT_ORDER})
def _gate_gradient_overload(grad_y, y, sigmoid, gate, one):
    def gate_gradient_in_order(grad_y, y, sigmoid, gate, one):
        return grad_y * y * sigmoid * (one + gate * (one - sigmoid))

    return gate_gradient_in_order


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _sigmoid(x, one):
    return one / (one + exp_vectorisable(-x))


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _softplus(x, zero):
    return max(x, zero) + log1p_vectorisable(exp_vectorisable(-abs(x)))


def _signature(kind: str, dtype: np.dtype):
    """The one signature a kernel is compiled with for a dtype (float32 or float64), whatever the inputs' strides.
    The per-channel sequences (u, delta, z, grad_out) may be any strided view ("A" layout: the mixer hands over
    transposes and chunks, which would otherwise be copied on every call); the arrays the loops vectorise over
    (A, B, C, the state) are C-contiguous. Each kernel ends with its working buffers (``_buffers``)."""
    t = numba.from_dtype(np.dtype(dtype))
    seq, c1, c2, c3, c4, flag = t[:, :, :], t[::1], t[:, ::1], t[:, :, ::1], t[:, :, :, ::1], types.boolean
    tasks = (types.int64, types.int64)  # the range of tasks this call computes
    if kind == "scan_forward":  # then the passes to run (ALL_PASSES but in bench/kernel_floor.py's profile)
        return types.void(*tasks, types.int64, seq, seq, c2, c3, c3, c1, seq, c1, flag, flag, flag, flag, flag, flag,
                          seq, c4, *(c2,) * 5, *(c1,) * 3)
    if kind == "scan_backward":
        return types.void(*tasks, types.int64, seq, seq, seq, c2, c3, c3, c1, seq, c1, c4, flag, flag, flag, flag,
                          flag, flag, seq, seq, seq, c3, c2, c2, c4, c4, seq,
                          *(c2,) * 9, *(c3,) * 4, *(c2,) * 3, *(c1,) * 5)
    if kind == "conv_silu_forward":  # depthwise conv + SiLU, both directions
        return types.void(*tasks, seq, c2, c1, c2, c1, c3, c3, c3, c3, c1)
    return types.void(*tasks, seq, c2, c2, c3, c3, seq, seq, seq, c3, c2, c3, c2, *(c1,) * 4)  # its gradient


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _gather_lanes(rows, b, d0, lanes, zero, out):
    """out[t, c] = rows[b, d0 + c, t] for the block's channels (rows: (batch, d_inner, L), any strides), zero in
    the lanes past d_inner's end. Row by row of out whatever the strides: each row a vector store, and the buffer
    filled in order (a (batch, d_inner, L) tensor read a channel at a time instead wrote out a column at a time:
    1.7x the time at L = 130, 6x at L = 1569, where out leaves L1). (Through a view: numba wraps an index it cannot
    prove non-negative, such as d0 + c, and that keeps a loop from vectorising.)"""
    length = rows.shape[2]
    block = rows[b, d0:d0 + lanes]
    if lanes == LANES:  # a constant count: the inner copy unrolls
        for t in range(length):
            for c in range(LANES):
                out[t, c] = block[c, t]
    else:
        out[:, :] = zero
        for t in range(length):
            for c in range(lanes):
                out[t, c] = block[c, t]


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _scatter_lanes(lane_rows, rows, b, d0, lanes, accumulate):
    """rows[b, d0 + c, t] = (or +=) lane_rows[t, c] for the block's channels, along whichever axis of rows is the
    closer in memory (into a (batch, d_inner, L) tensor: 0.18 ns an element at L = 130 against 0.30 row by row, 0.45
    against 0.32 at L = 1569)."""
    length = rows.shape[2]
    block = rows[b, d0:d0 + lanes]
    if rows.strides[1] <= rows.strides[2]:
        for t in range(length):
            for c in range(lanes):
                if accumulate:
                    block[c, t] += lane_rows[t, c]
                else:
                    block[c, t] = lane_rows[t, c]
    else:
        for c in range(lanes):
            for t in range(length):
                if accumulate:
                    block[c, t] += lane_rows[t, c]
                else:
                    block[c, t] = lane_rows[t, c]


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _block_parameters(A, D, delta_bias, has_D, has_bias, d0, lanes, zero, decay_rates, skips, biases):
    """The block's A transposed to (N, LANES), its D and delta_bias (LANES,); zero past d_inner's end (a zero rate,
    input and time step keep such a lane's state at zero)."""
    for c in range(LANES):
        valid = c < lanes
        skips[c] = D[d0 + c] if valid and has_D else zero
        biases[c] = delta_bias[d0 + c] if valid and has_bias else zero
        for n in range(A.shape[1]):
            decay_rates[n, c] = A[d0 + c, n] if valid else zero


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _time_steps(time_steps, biases, softplus, zero, slopes):
    """time_steps (L, LANES) <- softplus(raw + bias) (or raw + bias); with slopes (L, LANES; or empty): softplus'
    slope there, sigmoid(raw + bias) (or 1). The bias row by row, then one flat pass (it vectorises) in which the
    slope shares softplus' exp: with e = exp(-|v|), softplus(v) = max(v, 0) + log1p(e), sigmoid(v) = 1 / (1 + e)
    for v >= 0, e / (1 + e) below."""
    length = time_steps.shape[0]
    one = zero + 1
    for t in range(length):
        for c in range(LANES):
            time_steps[t, c] += biases[c]
    if not softplus:
        slopes[:, :] = one
        return
    raw = time_steps.reshape(length * LANES)
    if slopes.size:
        flat_slopes = slopes.reshape(length * LANES)
        for i in range(length * LANES):
            v = raw[i]
            e = exp_vectorisable(-abs(v))
            inverse = one / (one + e)
            flat_slopes[i] = inverse if v >= zero else e * inverse
            raw[i] = max(v, zero) + log1p_vectorisable(e)
    else:
        for i in range(length * LANES):
            raw[i] = _softplus(raw[i], zero)


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _forward_steps(B, C, b, start, stop, length, reverse, xs, time_steps, skips, decay_rates, state, inputs, ys,
                   n_state):
    """Scan steps start..stop - 1 of a block of LANES channels: advance state (N, LANES) and write
    ys[t] = <h_t, C_t> + D u_t (LANES,). Vectorised over the lanes: the sum over N is a vertical one."""
    for s in range(start, stop):
        t = length - 1 - s if reverse else s
        for c in range(LANES):
            inputs[c] = time_steps[t, c] * xs[t, c]
            ys[t, c] = skips[c] * xs[t, c]
        for n in range(n_state):
            b_n = B[b, t, n]
            c_n = C[b, t, n]
            for c in range(LANES):
                h = exp_vectorisable(time_steps[t, c] * decay_rates[n, c]) * state[n, c] + inputs[c] * b_n
                state[n, c] = h
                ys[t, c] += h * c_n


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _recompute_chunk(B, C, b, start, steps, length, reverse, xs, time_steps, skips, decay_rates, states, decays,
                     inputs, ys, n_state):
    """Backward's replay of forward steps start..start + steps - 1 of a block: states[i + 1] (N, LANES) = h after
    step start + i from states[0], decays[i] = exp(dt A) of that step, and the ungated output
    ys[t] = <h_t, C_t> + D u_t, summed over N in the forward's loop (vectorised over the lanes)."""
    for i in range(steps):
        t = length - 1 - (start + i) if reverse else start + i
        for c in range(LANES):
            inputs[c] = time_steps[t, c] * xs[t, c]
        for c in range(LANES):
            ys[t, c] = skips[c] * xs[t, c]
        for n in range(n_state):
            b_n = B[b, t, n]
            c_n = C[b, t, n]
            for c in range(LANES):
                decay = exp_vectorisable(time_steps[t, c] * decay_rates[n, c])
                decays[i, n, c] = decay
                h = decay * states[i, n, c] + inputs[c] * b_n
                states[i + 1, n, c] = h
                ys[t, c] += h * c_n


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _gate_rows(first, stop, gates, grad_ys, ys, grad_z):
    """Rows first..stop - 1 of (L, LANES) buffers, as one flat vector loop: the gate's gradient grad_z = grad_y y
    silu'(z), and grad_ys and ys (the ungated output) gated by silu(z)."""
    one = ys.dtype.type(1.0)
    flat_gates = gates[first:stop].reshape((stop - first) * LANES)
    flat_grad_ys = grad_ys[first:stop].reshape((stop - first) * LANES)
    flat_ys = ys[first:stop].reshape((stop - first) * LANES)
    flat_grad_z = grad_z[first:stop].reshape((stop - first) * LANES)
    for i in range((stop - first) * LANES):
        gate = flat_gates[i]
        sigmoid = _sigmoid(gate, one)
        flat_grad_z[i] = gate_gradient(flat_grad_ys[i], flat_ys[i], sigmoid, gate, one)
        flat_grad_ys[i] *= gate * sigmoid
        flat_ys[i] *= gate * sigmoid


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _reverse_steps(B, C, b, start, steps, length, reverse, xs, time_steps, grad_ys, decay_rates, states, decays,
                   grad_state, grad_A, grad_x, grad_dt, grad_B_lanes, grad_C_lanes, n_state):
    """Walk a recomputed chunk back, carrying grad_state (N, LANES) (dLoss/dh) and accumulating grad_A (N, LANES),
    dB, dC per lane (grad_B_lanes, grad_C_lanes: (L, N, LANES)) and the sums over N of the time step's and the
    input's gradients into grad_dt and grad_x (L, LANES; zero on entry): every operation a vector over the lanes."""
    for i in range(steps - 1, -1, -1):
        t = length - 1 - (start + i) if reverse else start + i
        for n in range(n_state):
            b_n = B[b, t, n]
            c_n = C[b, t, n]
            for c in range(LANES):
                g_h = grad_state[n, c] + grad_ys[t, c] * c_n  # dLoss/dh_t
                grad_C_lanes[t, n, c] += grad_ys[t, c] * states[i + 1, n, c]
                grad_B_lanes[t, n, c] += g_h * time_steps[t, c] * xs[t, c]
                decayed_previous = decays[i, n, c] * states[i, n, c]
                grad_dt[t, c] += g_h * (decay_rates[n, c] * decayed_previous + b_n * xs[t, c])
                grad_A[n, c] += g_h * time_steps[t, c] * decayed_previous
                grad_x[t, c] += g_h * b_n
                grad_state[n, c] = g_h * decays[i, n, c]  # dLoss/dh_{t-1} through h_t


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _finish_block(length, reverse, xs, time_steps, slopes, grad_ys, skips, sums_D, sums_bias, grad_u, grad_delta):
    """After a block's chunks: grad_u (L, LANES; grad_x on entry) = grad_y D + grad_x dt, grad_delta (grad_dt on
    entry) times softplus' slope, and the sums over L of grad_y u (D's gradient) and of grad_delta (the bias's),
    accumulated from the scan's last step to its first."""
    for s in range(length - 1, -1, -1):
        t = length - 1 - s if reverse else s
        for c in range(LANES):
            sums_D[c] += grad_ys[t, c] * xs[t, c]
            grad_u[t, c] = grad_ys[t, c] * skips[c] + grad_u[t, c] * time_steps[t, c]
            grad_delta[t, c] *= slopes[t, c]
            sums_bias[c] += grad_delta[t, c]


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _sum_lanes(grad_B_lanes, grad_C_lanes, b, g, grad_B_parts, grad_C_parts):
    """A task's dB and dC: its (L, N, LANES) lanes summed in lane order into grad_B_parts[b, g], grad_C_parts[b, g]
    (L, N)."""
    for t in range(grad_B_lanes.shape[0]):
        for n in range(grad_B_lanes.shape[1]):
            total_B = grad_B_lanes[t, n, 0]
            total_C = grad_C_lanes[t, n, 0]
            for c in range(1, LANES):
                total_B += grad_B_lanes[t, n, c]
                total_C += grad_C_lanes[t, n, c]
            grad_B_parts[b, g, t, n] = total_B
            grad_C_parts[b, g, t, n] = total_C


def _scan_kernels(unrolled_state: int):
    """The forward and backward scan kernels, compiled on first use (``compiled``). With ``unrolled_state`` N > 0
    the state size is that constant in the steps' loops, which LLVM unrolls (for the usual N = 16); with 0 it is read
    from A (any N). ``parts`` selects the passes a task runs, by bit (1 << their index in FORWARD_PASSES and
    BACKWARD_PASSES): ALL_PASSES in the package, the first few in bench/kernel_floor.py's profile. A closure
    constant, ``unrolled_state`` is compiled in and keys numba's cache entry."""

    @njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy", pipeline_class=_WideVectorCompiler)
    def _scan_forward_tasks(first_task, last_task, parts, u, delta, A, B, C, D, z, delta_bias, softplus, has_D, has_z,
                            has_bias, reverse, accumulate, out, checkpoints, xs, time_steps, ys, decay_rates, state,
                            skips, biases, inputs):
        """u, delta, z: (batch, d_inner, L), any strides; A: (d_inner, N); B, C: (batch, L, N); D, delta_bias:
        (d_inner,) or empty. Writes out (batch, d_inner, L, any strides), or adds to it with ``accumulate``, and
        checkpoints (batch, d_inner, chunks, N): the state before each chunk of checkpoint_every = ceil(L / chunks)
        steps. With ``reverse`` the scan runs from the last step to the first (step s of the scan is position
        L - 1 - s), as the backward branch of a bidirectional mixer does without flipping its inputs; chunks count in
        scan order. One task is a block of LANES channels of one batch item, computed side by side as the lanes of
        vectors. Buffers: xs, time_steps, ys (L, LANES); decay_rates, state (N, LANES); skips, biases, inputs
        (LANES,)."""
        d_inner, length = u.shape[1], u.shape[2]
        n_state = A.shape[1]
        blocks = -(-d_inner // LANES)
        checkpoint_every = -(-length // checkpoints.shape[2])
        zero = u.dtype.type(0.0)
        one = u.dtype.type(1.0)
        for task in range(first_task, last_task):  # of batch * blocks
            b = task // blocks
            d0 = task % blocks * LANES
            lanes = min(LANES, d_inner - d0)
            if parts & 1:
                _gather_lanes(u, b, d0, lanes, zero, xs)
                _gather_lanes(delta, b, d0, lanes, zero, time_steps)
            if parts & 2:
                _block_parameters(A, D, delta_bias, has_D, has_bias, d0, lanes, zero, decay_rates, skips, biases)
                _time_steps(time_steps, biases, softplus, zero, xs[:0])
            if parts & 4:
                state[:, :] = zero
                for chunk in range(checkpoints.shape[2]):
                    for c in range(lanes):
                        for n in range(n_state):
                            checkpoints[b, d0 + c, chunk, n] = state[n, c]
                    start = chunk * checkpoint_every
                    stop = min(start + checkpoint_every, length)
                    _forward_steps(B, C, b, start, stop, length, reverse, xs, time_steps, skips, decay_rates, state,
                                   inputs, ys, unrolled_state if unrolled_state else n_state)
            if parts & 8 and has_z:
                _gather_lanes(z, b, d0, lanes, zero, time_steps)  # reused for the gates
                gates = time_steps.reshape(length * LANES)  # flat: one long vector loop
                flat_ys = ys.reshape(length * LANES)
                for i in range(length * LANES):
                    flat_ys[i] *= gates[i] * _sigmoid(gates[i], one)
            if parts & 16:
                _scatter_lanes(ys, out, b, d0, lanes, accumulate)

    @njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy", pipeline_class=_WideVectorCompiler)
    def _scan_backward_tasks(
        first_task, last_task, parts, grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, softplus, has_D,
        has_z, has_bias, reverse, has_y,
        grad_u, grad_delta, grad_z, grad_A_parts, grad_D_parts, grad_bias_parts, grad_B_parts, grad_C_parts, y_out,
        xs, time_steps, slopes, gates, grad_ys, lane_grad_u, lane_grad_delta, lane_grad_z, lane_y,
        grad_B_lanes, grad_C_lanes, states, decays, decay_rates, grad_state, grad_A,
        skips, biases, sums_D, sums_bias, inputs,
    ):
        """Reverse scan. Inputs as in ``scan_forward`` plus grad_out (batch, d_inner, L). Writes grad_u,
        grad_delta (batch, d_inner, L); adds to grad_z (batch, d_inner, L, must be zero on entry or hold another
        direction's part); per-batch partials grad_A_parts (batch, d_inner, N), grad_D_parts and grad_bias_parts
        (batch, d_inner); per-group partials grad_B_parts, grad_C_parts (batch, groups, L, N). With ``has_y`` it
        also adds the recomputed (gated) output to y_out (batch, d_inner, L), for the gradient of a projection after
        the scan. grad_delta is with respect to the raw delta (before bias and softplus). The three (batch, d_inner, L)
        outputs may have any strides. One task is a group of blocks of LANES channels of one batch item; its dB and dC
        are summed over its channels lane by lane, then over the lanes in order. Buffers: (L, LANES) sequences;
        grad_B_lanes, grad_C_lanes (L, N, LANES); states (chunk + 1, N, LANES) (states[i + 1]: h after step i), decays
        (chunk, N, LANES); (N, LANES) and (LANES,) vectors."""
        d_inner, length = u.shape[1], u.shape[2]
        n_state = A.shape[1]
        checkpoint_every = -(-length // checkpoints.shape[2])
        groups = grad_B_parts.shape[1]
        blocks = -(-d_inner // LANES)
        blocks_per_group = -(-blocks // groups)
        zero = u.dtype.type(0.0)
        for task in range(first_task, last_task):  # of batch * groups
            b = task // groups
            g = task % groups
            if parts & 1:
                grad_B_lanes[:, :, :] = zero
                grad_C_lanes[:, :, :] = zero
            for block in range(g * blocks_per_group, min((g + 1) * blocks_per_group, blocks)):
                d0 = block * LANES
                lanes = min(LANES, d_inner - d0)
                if parts & 2:
                    _gather_lanes(u, b, d0, lanes, zero, xs)
                    _gather_lanes(delta, b, d0, lanes, zero, time_steps)
                    _gather_lanes(grad_out, b, d0, lanes, zero, grad_ys)  # zero past the end: those lanes add nothing
                    if has_z:
                        _gather_lanes(z, b, d0, lanes, zero, gates)
                if parts & 4:
                    _block_parameters(A, D, delta_bias, has_D, has_bias, d0, lanes, zero, decay_rates, skips, biases)
                    _time_steps(time_steps, biases, softplus, zero, slopes)
                    grad_state[:, :] = zero
                    grad_A[:, :] = zero
                    sums_D[:] = zero
                    sums_bias[:] = zero
                    lane_grad_u[:, :] = zero  # grad_x, then grad_u
                    lane_grad_delta[:, :] = zero  # grad_dt, then grad_delta
                if parts & 8:
                    for chunk in range(checkpoints.shape[2] - 1, -1, -1):
                        start = chunk * checkpoint_every
                        steps = min(checkpoint_every, length - start)
                        states[0, :, :] = zero
                        for c in range(lanes):
                            for n in range(n_state):
                                states[0, n, c] = checkpoints[b, d0 + c, chunk, n]
                        # recompute the chunk's states (and its output, for the gate or a projection after the
                        # scan: computed even when neither needs it, one copy of the loop to compile), gate, walk back
                        n = unrolled_state if unrolled_state else n_state
                        _recompute_chunk(B, C, b, start, steps, length, reverse, xs, time_steps, skips, decay_rates,
                                         states, decays, inputs, lane_y, n)
                        if has_z:
                            first = length - start - steps if reverse else start  # the chunk's rows, either way
                            _gate_rows(first, first + steps, gates, grad_ys, lane_y, lane_grad_z)
                        _reverse_steps(B, C, b, start, steps, length, reverse, xs, time_steps, grad_ys, decay_rates,
                                       states, decays, grad_state, grad_A, lane_grad_u, lane_grad_delta, grad_B_lanes,
                                       grad_C_lanes, n)
                if parts & 16:
                    _finish_block(length, reverse, xs, time_steps, slopes, grad_ys, skips, sums_D, sums_bias,
                                  lane_grad_u, lane_grad_delta)
                    for c in range(lanes):
                        for n in range(n_state):
                            grad_A_parts[b, d0 + c, n] = grad_A[n, c]
                        grad_D_parts[b, d0 + c] = sums_D[c]
                        grad_bias_parts[b, d0 + c] = sums_bias[c]
                if parts & 32:
                    _scatter_lanes(lane_grad_u, grad_u, b, d0, lanes, False)
                    _scatter_lanes(lane_grad_delta, grad_delta, b, d0, lanes, False)
                    if has_z:
                        _scatter_lanes(lane_grad_z, grad_z, b, d0, lanes, True)
                    if has_y:
                        _scatter_lanes(lane_y, y_out, b, d0, lanes, True)
            if parts & 1:
                _sum_lanes(grad_B_lanes, grad_C_lanes, b, g, grad_B_parts, grad_C_parts)

    return _scan_forward_tasks, _scan_backward_tasks


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _conv_both(padded, weight, bias, weight_b, bias_b, d, length, forward_out, backward_out, width):
    """The pre-activations of both directions' convs of one channel: padded holds x at offset K - 1 with K - 1
    zeros on each side; forward_out[t] (causal) and backward_out[t] (anti-causal) for t < length. Called with a
    constant width so LLVM unrolls the taps and vectorises over t."""
    for t in range(length):
        forward = bias[d]
        backward = bias_b[d]
        for k in range(width):
            forward += weight[d, k] * padded[t + k]
            backward += weight_b[d, k] * padded[t + 2 * (width - 1) - k]
        forward_out[t] = forward
        backward_out[t] = backward


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _conv_transposed(grad_pre, grad_pre_b, weight, weight_b, d, length, out, width):
    """out[t] = d(loss)/d(x[t]) from the pre-activation gradients (laid out as in ``conv_silu_backward``): x[t]
    fed the causal conv's position t + K - 1 - k and the anti-causal one's t - K + 1 + k, with tap k."""
    for t in range(length):
        total = weight[d, 0] * grad_pre[t + 2 * (width - 1)] + weight_b[d, 0] * grad_pre_b[t]
        for k in range(1, width):
            total += weight[d, k] * grad_pre[t + 2 * (width - 1) - k] + weight_b[d, k] * grad_pre_b[t + k]
        out[t] = total


@njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy", pipeline_class=_NoAliasCompiler)
def _conv_silu_forward_tasks(first_task, last_task, x, weight, bias, weight_b, bias_b, out, out_b, pre, pre_b,
                             padded):
    """Both directions' depthwise conv + SiLU in one pass over x (batch, d_inner, L), any strides: out is the causal
    conv (out[t] reads x[t - K + 1 .. t]), out_b the anti-causal one (out_b[t] reads x[t + K - 1 .. t], weight
    index k on x[t + K - 1 - k]: the causal conv of the flipped sequence, flipped back). weight, weight_b
    (d_inner, K); bias, bias_b (d_inner,); out, out_b (batch, d_inner, L). pre, pre_b: the pre-activations
    (batch, d_inner, L) for ``conv_silu_backward``, or empty arrays when they are not kept. Buffer: padded
    (L + 2 (K - 1),), zero on entry: x with K - 1 zeros on each side (each task rewrites the middle)."""
    d_inner, length = x.shape[1], x.shape[2]
    width = weight.shape[1]
    one = x.dtype.type(1.0)
    middle = padded[width - 1:width - 1 + length]  # a view: numba wraps an index it cannot prove non-negative (slow)
    for task in range(first_task, last_task):  # of batch * d_inner
        b = task // d_inner
        d = task % d_inner
        for t in range(length):
            middle[t] = x[b, d, t]
        if width == 4:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, out[b, d], out_b[b, d], 4)
        else:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, out[b, d], out_b[b, d], width)
        if pre.shape[0]:
            for t in range(length):
                pre[b, d, t] = out[b, d, t]
                pre_b[b, d, t] = out_b[b, d, t]
        for t in range(length):
            out[b, d, t] *= _sigmoid(out[b, d, t], one)
            out_b[b, d, t] *= _sigmoid(out_b[b, d, t], one)


@njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy", pipeline_class=_NoAliasCompiler)
def _conv_silu_backward_tasks(first_task, last_task, x, weight, weight_b, pre, pre_b, grad_out, grad_out_b, grad_x,
                              grad_weight_parts, grad_bias_parts, grad_weight_b_parts, grad_bias_b_parts, padded,
                              grad_pre, grad_pre_b, grad_input):
    """Gradient of ``conv_silu_forward`` given the gradients of out and out_b (batch, d_inner, L) and the
    pre-activations that call kept (pre, pre_b): writes grad_x (batch, d_inner, L, any strides; both directions
    summed) and per-batch partials of the weights' gradients (batch, d_inner, K) and the biases' (batch, d_inner).
    Buffers: padded (x) and grad_pre, grad_pre_b (the pre-activations' gradients, position t at t + K - 1), each
    (L + 2 (K - 1),) and zero on entry (the ends stay zero); grad_input (L,)."""
    d_inner, length = x.shape[1], x.shape[2]
    width = weight.shape[1]
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    # views, not offset indices: numba wraps an index it cannot prove non-negative, and that stops vectorisation
    x_middle = padded[width - 1:width - 1 + length]
    grad_middle = grad_pre[width - 1:width - 1 + length]
    grad_middle_b = grad_pre_b[width - 1:width - 1 + length]
    for task in range(first_task, last_task):  # of batch * d_inner
        b = task // d_inner
        d = task % d_inner
        for t in range(length):
            x_middle[t] = x[b, d, t]
            grad_middle[t] = grad_out[b, d, t]
            grad_middle_b[t] = grad_out_b[b, d, t]
        for t in range(length):  # SiLU'(v) = s (1 + v (1 - s)), s = sigmoid(v)
            v = pre[b, d, t]
            s = _sigmoid(v, one)
            grad_middle[t] *= s * (one + v * (one - s))
            v = pre_b[b, d, t]
            s = _sigmoid(v, one)
            grad_middle_b[t] *= s * (one + v * (one - s))
        grad_b_sum = zero
        grad_b_sum_b = zero
        for t in range(length):
            grad_b_sum += grad_middle[t]
            grad_b_sum_b += grad_middle_b[t]
        grad_bias_parts[b, d] = grad_b_sum
        grad_bias_b_parts[b, d] = grad_b_sum_b
        for k in range(width):
            forward = zero
            backward = zero
            x_forward = padded[k:k + length]  # the x each tap met, in both directions
            x_backward = padded[2 * (width - 1) - k:2 * (width - 1) - k + length]
            for t in range(length):
                forward += grad_middle[t] * x_forward[t]
                backward += grad_middle_b[t] * x_backward[t]
            grad_weight_parts[b, d, k] = forward
            grad_weight_b_parts[b, d, k] = backward
        if width == 4:
            _conv_transposed(grad_pre, grad_pre_b, weight, weight_b, d, length, grad_input, 4)
        else:
            _conv_transposed(grad_pre, grad_pre_b, weight, weight_b, d, length, grad_input, width)
        for t in range(length):
            grad_x[b, d, t] = grad_input[t]


# ----- running a kernel's tasks on torch's thread count -----

_CHUNKS_PER_THREAD = 4  # a thread slowed by other work on its core leaves its chunks to the others
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """This process's helper threads (a process forked from one that had a pool starts a new one)."""
    with _pools_lock:
        pool = _pools.get(os.getpid())
        if pool is None or pool._max_workers < workers:
            pool = _pools[os.getpid()] = ThreadPoolExecutor(workers, thread_name_prefix="stretchysnake-numba")
        return pool


def _run_tasks(kernel, tasks: int, args: tuple, spec=()) -> None:
    """kernel(first, last, *args, *working buffers) over tasks 0..tasks - 1 on torch.get_num_threads() threads, the
    caller's among them, each thread with buffers of its own (``spec``: their shapes and dtypes, see ``_buffers``).
    Every task writes only its own outputs, so the split does not change the result."""
    threads = max(1, min(torch.get_num_threads(), tasks))
    if threads == 1:
        kernel(0, tasks, *args, *_buffers(kernel, spec))
        return
    chunks = min(tasks, threads * _CHUNKS_PER_THREAD)
    bounds = [tasks * i // chunks for i in range(chunks + 1)]
    next_chunk = itertools.count()  # next() on a count is atomic under the GIL

    def work():
        own = _buffers(kernel, spec)
        for chunk in next_chunk:
            if chunk >= chunks:
                return
            kernel(bounds[chunk], bounds[chunk + 1], *args, *own)

    helpers = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
    work()
    for helper in helpers:
        helper.result()


_thread_buffers = threading.local()


def _buffers(kernel, spec) -> tuple:
    """This thread's working buffers for ``kernel``, one per (shape, dtype) in spec, zero-filled when allocated (the
    conv kernels rely on zeros where they never write). Kept from the last call while the spec is the same: a
    training run calls each kernel with the same shapes again and again, and allocating ~25 aligned buffers costs
    about what a small call's kernel does. Each starts on a 64-byte boundary (a row of LANES float32 is one cache
    line: no vector load straddles two)."""
    cache = _thread_buffers.__dict__.setdefault("by_kernel", {})
    kept = cache.get(kernel)
    if kept is not None and kept[0] == spec:
        return kept[1]
    sizes = [math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in spec]
    offsets = list(itertools.accumulate((-(-size // 64) * 64 for size in sizes), initial=0))
    memory = np.zeros(offsets[-1] + 64, dtype=np.uint8)
    start = -memory.ctypes.data % 64
    arrays = tuple(memory[start + offset:start + offset + size].view(dtype).reshape(shape)
                   for offset, size, (shape, dtype) in zip(offsets, sizes, spec))
    cache[kernel] = (spec, arrays)
    return arrays


def _lane_buffers(dtype, *shapes):
    return tuple(((*shape, LANES), dtype.str) for shape in shapes)


def _scan_forward_buffers(u, delta, A, *_):
    length, n_state = u.shape[2], A.shape[1]
    return _lane_buffers(delta.dtype, (length,), (length,), (length,), (n_state,), (n_state,), (), (), ())


def _scan_backward_buffers(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, *_):
    length, n_state = u.shape[2], A.shape[1]
    chunk = -(-length // checkpoints.shape[2])
    return _lane_buffers(delta.dtype, *((length,),) * 9, (length, n_state), (length, n_state), (chunk + 1, n_state),
                         (chunk, n_state), *((n_state,),) * 3, *((),) * 5)


def _conv_buffers(padded, rows):
    """``padded`` buffers of L + 2 (K - 1) (x or a gradient with K - 1 zeros on each side), then ``rows`` of L."""

    def spec(x, weight, *_):
        span, dtype = x.shape[2] + 2 * (weight.shape[1] - 1), weight.dtype.str
        return (*(((span,), dtype),) * padded, *(((x.shape[2],), dtype),) * rows)

    return spec


def _batch_times_channels(x, *_):
    return x.shape[0] * x.shape[1]


def _batch_times_blocks(x, *_):
    return x.shape[0] * -(-x.shape[1] // LANES)


# ----- the kernels, compiled for a dtype when first needed -----

UNROLLED_STATE_SIZES = (16,)  # state sizes whose scan kernels have N as a constant (any other N: the general ones)
_SCAN_KERNELS = {size: _scan_kernels(size) for size in (*UNROLLED_STATE_SIZES, 0)}  # nothing compiled yet
KERNELS = ("scan_forward", "scan_backward", "conv_silu_forward", "conv_silu_backward")
# seconds numba took to compile each for float32 (float64: about as long), 2-core Intel Xeon (AVX-512), numba 0.68.1
_COMPILE_SECONDS = {"scan_forward": 2.1, "scan_backward": 5.0, "conv_silu_forward": 0.4, "conv_silu_backward": 0.5}
_entries: dict = {}  # (dispatcher, dtype) -> the compiled kernel's entry point


def dispatcher(kind: str, n_state: int = 16):
    """The numba dispatcher of kernel `kind` (one of KERNELS) for state size `n_state`."""
    if kind == "conv_silu_forward":
        return _conv_silu_forward_tasks
    if kind == "conv_silu_backward":
        return _conv_silu_backward_tasks
    forward, backward = _SCAN_KERNELS[n_state if n_state in UNROLLED_STATE_SIZES else 0]
    return forward if kind == "scan_forward" else backward


def compiled(kind: str, dtype, n_state: int = 16):
    """Kernel `kind` for `dtype` (float32 or float64) and state size `n_state`, loaded from numba's cache or compiled
    on this first use: its entry point, called with its task range, its arguments and its working buffers."""
    dtype = np.dtype(dtype)
    entry = _entries.get((dispatcher(kind, n_state), dtype))
    if entry is None:
        prepare((kind,), dtype, n_state)
        entry = _entries[dispatcher(kind, n_state), dtype]
    return entry


def prepare(kinds, dtype, n_state: int = 16) -> None:
    """Load or compile the kernels of `kinds` for `dtype` and state size `n_state` now, with one log line if numba
    compiles them: the fused ops ask for the forward and backward kernels together before a training step's first
    forward, so a first run says once what it waits for."""
    dtype = np.dtype(dtype)
    missing = [kind for kind in kinds if (dispatcher(kind, n_state), dtype) not in _entries]
    if not missing:
        return
    requests = [(dispatcher(kind, n_state), _signature(kind, dtype)) for kind in missing]
    entries = compile_kernels(requests, f"{dtype.name}: {', '.join(missing)}",
                              sum(_COMPILE_SECONDS[kind] for kind in missing), CACHE_FOLDER)
    for (kernel, _), entry in zip(requests, entries):
        _entries[kernel, dtype] = entry


def _runner(kind, task_count, buffers, decay_rates_at=None):
    """Kernel `kind` as a function of its arguments alone: runs all ``task_count(*args)`` tasks of a call (for a scan,
    every pass, with the kernel for the state size of A (d_inner, N), its argument number `decay_rates_at`). The
    working buffers (``buffers(*args)``: their spec) are allocated here and passed in, not by the kernel: numba marks
    a kernel's arguments ``noalias`` (``_NoAliasCompiler``) but knows nothing of arrays it allocates itself, and
    without that LLVM keeps the per-lane sums in memory and leaves loops scalar."""
    kernel = dispatcher(kind)

    def run(*args):
        if decay_rates_at is None:
            _run_tasks(compiled(kind, args[1].dtype), task_count(*args), args, buffers(*args))
        else:
            A = args[decay_rates_at]
            _run_tasks(compiled(kind, A.dtype, A.shape[1]), task_count(*args), (ALL_PASSES, *args), buffers(*args))

    run.__name__ = kind
    run.__doc__ = kernel.py_func.__doc__
    return run


scan_forward = _runner("scan_forward", _batch_times_blocks, _scan_forward_buffers, decay_rates_at=2)
# one task per (batch, channel group): grad_B_parts (batch, groups, L, N) is the 23rd argument
scan_backward = _runner("scan_backward", lambda *args: args[22].shape[0] * args[22].shape[1], _scan_backward_buffers,
                        decay_rates_at=3)
conv_silu_forward = _runner("conv_silu_forward", _batch_times_channels, _conv_buffers(1, rows=0))
conv_silu_backward = _runner("conv_silu_backward", _batch_times_channels, _conv_buffers(3, rows=1))
