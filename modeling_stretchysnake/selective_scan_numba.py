"""Fused Mamba-1 selective scan for CPU tensors, compiled with numba (forward and backward).

Same function as ``selective_scan_reference`` (mamba-ssm ``selective_scan_fn`` semantics), computed with the
exact per-step recurrence, so any decay is handled without splitting or overflow:

    dt_t = softplus(delta_t + delta_bias)        h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = (<h_t, C_t> + D * u_t) * silu(z_t)

Layout: one task per (batch, channel) in forward; the loop over L keeps the N-value state in a small
local array and is vectorised over N (polynomial ``exp`` / ``log1p`` that LLVM can vectorise: numba's
``math.exp`` is a scalar libm call, ~10x slower here). Softplus and the gate's sigmoid are computed in
separate vectorisable passes over time. The state before every ``checkpoint_every``-th step is saved; backward
recomputes one such chunk at a time into a (chunk + 1, N) buffer and walks it back, so training memory is
O(L * d_inner) rather than O(L * d_inner * N). Gradients of B and C are summed over channels per group of channels into
(batch, groups, L, N) buffers and reduced afterwards in torch: no atomics, deterministic for any thread count.

The kernels are compiled when this module is first imported, for float32 and float64 (``cache=True``: once per
machine, then loaded from numba's cache).

Threads: each kernel is one sequential numba function over a range of independent tasks (``nogil``), and
``_run_tasks`` spreads the tasks over ``torch.get_num_threads()`` Python threads. numba's own ``parallel=True``
is not used: it compiles a prange body twice (once on its own, once linked into its caller and optimised again),
and which copy runs depends on whether the kernel was just compiled or loaded from the cache. With the fast-math
flags the two copies vectorise the sums differently, so a freshly compiled kernel and a cached one differed in the
last bits (bench/RESULTS.md, "Determinism"). A sequential kernel has one compiled body, the one numba caches.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:  # transformers' remote-code import check skips try blocks: numba stays optional for Hub users
    import numba  # noqa: F401
    from numba import njit
    from numba.core import compiler, types
    from numba.extending import intrinsic, overload
except ImportError as error:
    raise ImportError("the fused CPU selective scan needs numba (pip install numba)") from error



class _NoAliasCompiler(compiler.Compiler):
    """numba's pipeline with the array arguments marked ``noalias``, as numba marks a ``parallel=True`` loop body's
    (the kernels never pass one array twice): without it LLVM must assume that every store may change any input and
    leaves the backward scan's loop over N scalar (1.9x the time)."""

    def __init__(self, typingctx, targetctx, library, args, return_type, flags, locals):
        flags = flags.copy()
        flags.noalias = True
        super().__init__(typingctx, targetctx, library, args, return_type, flags, locals)


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


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _sigmoid(x, one):
    return one / (one + exp_vectorisable(-x))


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _softplus(x, zero):
    return max(x, zero) + log1p_vectorisable(exp_vectorisable(-abs(x)))


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _time_steps(delta_row, bias, softplus, zero, out):
    """out[i] = softplus(delta_row[i] + bias) (or without softplus). The strided row is gathered first, so the
    softplus pass runs over a contiguous buffer and vectorises."""
    for i in range(out.shape[0]):
        out[i] = delta_row[i]
    for i in range(out.shape[0]):
        raw = out[i] + bias
        out[i] = _softplus(raw, zero) if softplus else raw


def _signatures(kind):
    """Explicit signatures, float32 and float64: one compiled kernel per dtype whatever the inputs' strides. The
    per-channel sequences (u, delta, z, grad_out) may be any strided view ("A" layout: the mixer hands over
    transposes and chunks, which would otherwise be copied on every call); the arrays the loop over N vectorises
    over (A, B, C, the state) are C-contiguous."""
    signatures = []
    for t in (types.float32, types.float64):
        seq, c1, c2, c3, c4, flag = t[:, :, :], t[::1], t[:, ::1], t[:, :, ::1], t[:, :, :, ::1], types.boolean
        tasks = (types.int64, types.int64)  # the range of tasks this call computes
        if kind == "forward":
            signatures.append(types.void(*tasks, seq, seq, c2, c3, c3, c1, seq, c1, flag, flag, flag, flag, flag,
                                         flag, seq, c4))
        elif kind == "backward":
            signatures.append(types.void(*tasks, seq, seq, seq, c2, c3, c3, c1, seq, c1, c4, flag, flag, flag, flag,
                                         flag, flag, seq, seq, seq, c3, c2, c2, c4, c4, seq))
        elif kind == "conv":  # depthwise conv + SiLU, both directions
            signatures.append(types.void(*tasks, seq, c2, c1, c2, c1, c3, c3))
        else:  # its gradient
            signatures.append(types.void(*tasks, seq, c2, c1, c2, c1, seq, seq, seq, c3, c2, c3, c2))
    return signatures


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _forward_steps(u, A, B, C, b, d, start, stop, reverse, skip, time_steps, state, ys, n_state):
    """Scan steps start..stop - 1 of channel d: advance state (N,) and write ys[t] = <h_t, C_t> + D u_t."""
    length = u.shape[2]
    for s in range(start, stop):
        t = length - 1 - s if reverse else s
        dt = time_steps[t]
        x = u[b, d, t]
        dt_x = dt * x
        y = x * skip
        for n in range(n_state):
            state[n] = exp_vectorisable(dt * A[d, n]) * state[n] + dt_x * B[b, t, n]
            y += state[n] * C[b, t, n]
        ys[t] = y


@njit(_signatures("forward"), nogil=True, cache=True, fastmath=_FAST, error_model="numpy",
      pipeline_class=_NoAliasCompiler)
def _scan_forward_tasks(first_task, last_task, u, delta, A, B, C, D, z, delta_bias, softplus, has_D, has_z, has_bias,
                        reverse, accumulate, out, checkpoints):
    """u, delta, z: (batch, d_inner, L), any strides; A: (d_inner, N); B, C: (batch, L, N); D, delta_bias:
    (d_inner,) or empty. Writes out (batch, d_inner, L, any strides), or adds to it with ``accumulate``, and checkpoints
    (batch, d_inner, chunks, N): the state before each chunk of checkpoint_every = ceil(L / chunks) steps. With
    ``reverse`` the scan runs from the last step to the first (step s of the scan is position L - 1 - s), as the
    backward branch of a bidirectional mixer does without flipping its inputs; chunks count in scan order."""
    batch, d_inner, length = u.shape
    n_state = A.shape[1]
    checkpoint_every = -(-length // checkpoints.shape[2])
    zero = u.dtype.type(0.0)
    one = u.dtype.type(1.0)
    state = np.empty(n_state, dtype=u.dtype)  # buffers of one task, reused by the next
    time_steps = np.empty(length, dtype=u.dtype)
    ys = np.empty(length, dtype=u.dtype)
    for task in range(first_task, last_task):  # of batch * d_inner
        b = task // d_inner
        d = task % d_inner
        state[:] = zero
        _time_steps(delta[b, d], delta_bias[d] if has_bias else zero, softplus, zero, time_steps)
        skip = D[d] if has_D else zero
        for chunk in range(checkpoints.shape[2]):
            for n in range(n_state):
                checkpoints[b, d, chunk, n] = state[n]
            start = chunk * checkpoint_every
            stop = min(start + checkpoint_every, length)
            if n_state == 16:  # the usual state size as a constant: LLVM unrolls the loop over N into vectors
                _forward_steps(u, A, B, C, b, d, start, stop, reverse, skip, time_steps, state, ys, 16)
            else:
                _forward_steps(u, A, B, C, b, d, start, stop, reverse, skip, time_steps, state, ys, n_state)
        if has_z:
            gates = time_steps  # reused: gather the strided gate row, then one vectorisable pass
            for t in range(length):
                gates[t] = z[b, d, t]
            for t in range(length):
                ys[t] *= gates[t] * _sigmoid(gates[t], one)
        if accumulate:
            for t in range(length):
                out[b, d, t] += ys[t]
        else:
            for t in range(length):
                out[b, d, t] = ys[t]


@njit(inline="always", cache=True, fastmath=_FAST, error_model="numpy")
def _backward_chunk(grad_out, u, A, B, C, z, b, d, g, start, steps, reverse, has_z, has_y, skip, time_steps,
                    softplus_slopes, gate_sigmoids, states, decays, grad_state, grad_A, sums,
                    grad_u, grad_delta, grad_z, grad_B_parts, grad_C_parts, y_out, n_state):
    """One checkpoint chunk of channel d in backward: recompute its states from states[0], then walk it back,
    carrying grad_state (N,) and accumulating grad_A (N,) and the grad_D, grad_bias sums (sums[0], sums[1]).
    (At most 30 arguments: CPython passes more as *args, which numba cannot inline.)"""
    length = u.shape[2]
    zero = u.dtype.type(0.0)
    one = u.dtype.type(1.0)
    grad_D = sums[0]
    grad_bias = sums[1]
    for i in range(steps):  # recompute the chunk's states
        t = length - 1 - (start + i) if reverse else start + i
        dt = time_steps[i]
        dt_x = dt * u[b, d, t]
        for n in range(n_state):
            decay = exp_vectorisable(dt * A[d, n])
            decays[i, n] = decay
            states[i + 1, n] = decay * states[i, n] + dt_x * B[b, t, n]
    for i in range(steps - 1, -1, -1):  # and walk it back
        t = length - 1 - (start + i) if reverse else start + i
        x = u[b, d, t]
        dt = time_steps[i]
        grad_y = grad_out[b, d, t]
        if has_z or has_y:
            y = skip * x
            for n in range(n_state):
                y += states[i + 1, n] * C[b, t, n]
            if has_z:
                gate = z[b, d, t]
                sigmoid = gate_sigmoids[i]
                grad_z[b, d, t] += grad_y * y * sigmoid * (one + gate * (one - sigmoid))
                grad_y *= gate * sigmoid
                y *= gate * sigmoid
            if has_y:
                y_out[b, d, t] += y
        grad_D += grad_y * x
        grad_dt = zero
        grad_x = zero
        for n in range(n_state):
            g_h = grad_state[n] + grad_y * C[b, t, n]  # dLoss/dh_t
            grad_C_parts[b, g, t, n] += grad_y * states[i + 1, n]
            grad_B_parts[b, g, t, n] += g_h * dt * x
            decayed_previous = decays[i, n] * states[i, n]
            grad_dt += g_h * (A[d, n] * decayed_previous + B[b, t, n] * x)
            grad_A[n] += g_h * dt * decayed_previous
            grad_x += g_h * B[b, t, n]
            grad_state[n] = g_h * decays[i, n]  # dLoss/dh_{t-1} through h_t
        grad_u[b, d, t] = grad_y * skip + grad_x * dt
        grad_dt *= softplus_slopes[i]
        grad_delta[b, d, t] = grad_dt
        grad_bias += grad_dt
    sums[0] = grad_D
    sums[1] = grad_bias


@njit(_signatures("backward"), nogil=True, cache=True, fastmath=_FAST, error_model="numpy",
      pipeline_class=_NoAliasCompiler)
def _scan_backward_tasks(
    first_task, last_task, grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, softplus, has_D, has_z,
    has_bias, reverse, has_y,
    grad_u, grad_delta, grad_z, grad_A_parts, grad_D_parts, grad_bias_parts, grad_B_parts, grad_C_parts, y_out,
):
    """Reverse scan. Inputs as in ``scan_forward`` plus grad_out (batch, d_inner, L). Writes grad_u,
    grad_delta (batch, d_inner, L); adds to grad_z (batch, d_inner, L, must be zero on entry or hold another
    direction's part); per-batch partials grad_A_parts (batch, d_inner, N), grad_D_parts and grad_bias_parts
    (batch, d_inner); per-group partials grad_B_parts, grad_C_parts (batch, groups, L, N). With ``has_y`` it
    also adds the recomputed (gated) output to y_out (batch, d_inner, L), for the gradient
    of a projection after the scan. grad_delta is with respect to the raw delta (before bias and softplus). The
    three (batch, d_inner, L) outputs may have any strides."""
    batch, d_inner, length = u.shape
    n_state = A.shape[1]
    checkpoint_every = -(-length // checkpoints.shape[2])
    groups = grad_B_parts.shape[1]
    per_group = (d_inner + groups - 1) // groups
    zero = u.dtype.type(0.0)
    one = u.dtype.type(1.0)
    # buffers of one task, reused by the next
    states = np.empty((checkpoint_every + 1, n_state), dtype=u.dtype)  # states[i + 1] = h after step i
    decays = np.empty((checkpoint_every, n_state), dtype=u.dtype)
    time_steps = np.empty(checkpoint_every, dtype=u.dtype)
    softplus_slopes = np.empty(checkpoint_every, dtype=u.dtype)
    gate_sigmoids = np.empty(checkpoint_every, dtype=u.dtype)
    grad_state = np.empty(n_state, dtype=u.dtype)
    grad_A = np.empty(n_state, dtype=u.dtype)
    sums = np.empty(2, dtype=u.dtype)  # grad_D, grad_bias of the channel
    for task in range(first_task, last_task):  # of batch * groups
        b = task // groups
        g = task % groups
        for t in range(length):  # zeroed here, by the thread that fills them, not by a separate pass
            for n in range(n_state):
                grad_B_parts[b, g, t, n] = zero
                grad_C_parts[b, g, t, n] = zero
        for d in range(g * per_group, min((g + 1) * per_group, d_inner)):
            bias = delta_bias[d] if has_bias else zero
            skip = D[d] if has_D else zero
            for n in range(n_state):
                grad_state[n] = zero
                grad_A[n] = zero
            sums[0] = zero
            sums[1] = zero
            for chunk in range(checkpoints.shape[2] - 1, -1, -1):
                start = chunk * checkpoint_every
                steps = min(checkpoint_every, length - start)
                for i in range(steps):  # gather the chunk's strided rows ...
                    t = length - 1 - (start + i) if reverse else start + i
                    softplus_slopes[i] = delta[b, d, t] + bias
                    if has_z:
                        gate_sigmoids[i] = z[b, d, t]
                for i in range(steps):  # ... then the per-step scalars in vectorisable passes
                    raw = softplus_slopes[i]
                    time_steps[i] = _softplus(raw, zero) if softplus else raw
                    softplus_slopes[i] = _sigmoid(raw, one) if softplus else one
                if has_z:
                    for i in range(steps):
                        gate_sigmoids[i] = _sigmoid(gate_sigmoids[i], one)
                for n in range(n_state):
                    states[0, n] = checkpoints[b, d, chunk, n]
                if n_state == 16:  # as in forward: the usual state size as a constant
                    _backward_chunk(
                        grad_out, u, A, B, C, z, b, d, g, start, steps, reverse, has_z, has_y, skip, time_steps,
                        softplus_slopes, gate_sigmoids, states, decays, grad_state, grad_A, sums,
                        grad_u, grad_delta, grad_z, grad_B_parts, grad_C_parts, y_out, 16)
                else:
                    _backward_chunk(
                        grad_out, u, A, B, C, z, b, d, g, start, steps, reverse, has_z, has_y, skip, time_steps,
                        softplus_slopes, gate_sigmoids, states, decays, grad_state, grad_A, sums,
                        grad_u, grad_delta, grad_z, grad_B_parts, grad_C_parts, y_out, n_state)
            for n in range(n_state):
                grad_A_parts[b, d, n] = grad_A[n]
            grad_D_parts[b, d] = sums[0]
            grad_bias_parts[b, d] = sums[1]


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


@njit(_signatures("conv"), nogil=True, cache=True, fastmath=_FAST, error_model="numpy",
      pipeline_class=_NoAliasCompiler)
def _conv_silu_forward_tasks(first_task, last_task, x, weight, bias, weight_b, bias_b, out, out_b):
    """Both directions' depthwise conv + SiLU in one pass over x (batch, d_inner, L), any strides: out is the causal
    conv (out[t] reads x[t - K + 1 .. t]), out_b the anti-causal one (out_b[t] reads x[t + K - 1 .. t], weight
    index k on x[t + K - 1 - k]: the causal conv of the flipped sequence, flipped back). weight, weight_b
    (d_inner, K); bias, bias_b (d_inner,); out, out_b (batch, d_inner, L)."""
    batch, d_inner, length = x.shape
    width = weight.shape[1]
    one = x.dtype.type(1.0)
    padded = np.zeros(length + 2 * (width - 1), dtype=x.dtype)  # x with K - 1 zeros on each side (the ends stay 0)
    for task in range(first_task, last_task):  # of batch * d_inner
        b = task // d_inner
        d = task % d_inner
        for t in range(length):
            padded[t + width - 1] = x[b, d, t]
        if width == 4:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, out[b, d], out_b[b, d], 4)
        else:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, out[b, d], out_b[b, d], width)
        for t in range(length):
            out[b, d, t] *= _sigmoid(out[b, d, t], one)
            out_b[b, d, t] *= _sigmoid(out_b[b, d, t], one)


@njit(_signatures("conv_backward"), nogil=True, cache=True, fastmath=_FAST, error_model="numpy",
      pipeline_class=_NoAliasCompiler)
def _conv_silu_backward_tasks(first_task, last_task, x, weight, bias, weight_b, bias_b, grad_out, grad_out_b, grad_x,
                              grad_weight_parts, grad_bias_parts, grad_weight_b_parts, grad_bias_b_parts):
    """Gradient of ``conv_silu_forward`` given the gradients of out and out_b (batch, d_inner, L): writes grad_x
    (batch, d_inner, L, any strides; both directions summed) and per-batch partials of the weights' gradients
    (batch, d_inner, K) and the biases' (batch, d_inner). The pre-activations are recomputed, not saved."""
    batch, d_inner, length = x.shape
    width = weight.shape[1]
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    # buffers of one task, reused by the next: each task rewrites positions K - 1 .. K - 2 + L, the zeros around stay
    span = length + 2 * (width - 1)
    padded = np.zeros(span, dtype=x.dtype)
    # gradients of the pre-activations, position t at t + K - 1 with zeros around (for the transposed conv)
    grad_pre = np.zeros(span, dtype=x.dtype)
    grad_pre_b = np.zeros(span, dtype=x.dtype)
    pre = np.empty(length, dtype=x.dtype)
    pre_b = np.empty(length, dtype=x.dtype)
    for task in range(first_task, last_task):  # of batch * d_inner
        b = task // d_inner
        d = task % d_inner
        for t in range(length):
            padded[t + width - 1] = x[b, d, t]
        if width == 4:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, pre, pre_b, 4)
        else:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, pre, pre_b, width)
        for t in range(length):  # gather the (strided) incoming gradients, so the SiLU' pass vectorises
            grad_pre[t + width - 1] = grad_out[b, d, t]
            grad_pre_b[t + width - 1] = grad_out_b[b, d, t]
        for t in range(length):  # SiLU'(v) = s (1 + v (1 - s)), s = sigmoid(v)
            s = _sigmoid(pre[t], one)
            grad_pre[t + width - 1] *= s * (one + pre[t] * (one - s))
            s = _sigmoid(pre_b[t], one)
            grad_pre_b[t + width - 1] *= s * (one + pre_b[t] * (one - s))
        grad_b_sum = zero
        grad_b_sum_b = zero
        for t in range(length):
            grad_b_sum += grad_pre[t + width - 1]
            grad_b_sum_b += grad_pre_b[t + width - 1]
        grad_bias_parts[b, d] = grad_b_sum
        grad_bias_b_parts[b, d] = grad_b_sum_b
        for k in range(width):
            forward = zero
            backward = zero
            for t in range(length):
                forward += grad_pre[t + width - 1] * padded[t + k]
                backward += grad_pre_b[t + width - 1] * padded[t + 2 * (width - 1) - k]
            grad_weight_parts[b, d, k] = forward
            grad_weight_b_parts[b, d, k] = backward
        if width == 4:
            _conv_transposed(grad_pre, grad_pre_b, weight, weight_b, d, length, pre, 4)
        else:
            _conv_transposed(grad_pre, grad_pre_b, weight, weight_b, d, length, pre, width)
        for t in range(length):
            grad_x[b, d, t] = pre[t]


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


def _run_tasks(kernel, tasks: int, args: tuple) -> None:
    """kernel(first, last, *args) over tasks 0..tasks - 1 on torch.get_num_threads() threads, the caller's among
    them. Every task writes only its own outputs, so the split does not change the result."""
    threads = max(1, min(torch.get_num_threads(), tasks))
    if threads == 1:
        kernel(0, tasks, *args)
        return
    chunks = min(tasks, threads * _CHUNKS_PER_THREAD)
    bounds = [tasks * i // chunks for i in range(chunks + 1)]
    next_chunk = itertools.count()  # next() on a count is atomic under the GIL

    def work():
        for chunk in next_chunk:
            if chunk >= chunks:
                return
            kernel(bounds[chunk], bounds[chunk + 1], *args)

    helpers = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
    work()
    for helper in helpers:
        helper.result()


def _on_threads(kernel, task_count):
    """``kernel`` without its task range: runs all ``task_count(*args)`` tasks of a call."""

    def run(*args):
        _run_tasks(kernel, task_count(*args), args)

    run.__name__ = kernel.__name__.removeprefix("_").removesuffix("_tasks")
    run.__doc__ = kernel.__doc__
    return run


def _batch_times_channels(x, *_):
    return x.shape[0] * x.shape[1]


scan_forward = _on_threads(_scan_forward_tasks, _batch_times_channels)
# one task per (batch, channel group): grad_B_parts (batch, groups, L, N) is the 23rd argument
scan_backward = _on_threads(_scan_backward_tasks, lambda *args: args[22].shape[0] * args[22].shape[1])
conv_silu_forward = _on_threads(_conv_silu_forward_tasks, _batch_times_channels)
conv_silu_backward = _on_threads(_conv_silu_backward_tasks, _batch_times_channels)
