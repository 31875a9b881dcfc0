"""Fused Mamba-1 selective scan for CPU tensors, compiled with numba (forward and backward).

Same function as ``selective_scan_reference`` (mamba-ssm ``selective_scan_fn`` semantics), computed with the
exact per-step recurrence, so any decay is handled without splitting or overflow:

    dt_t = softplus(delta_t + delta_bias)        h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = (<h_t, C_t> + D * u_t) * silu(z_t)

Layout: one parallel task per (batch, channel) in forward; the loop over L keeps the N-value state in a small
local array and is vectorised over N (polynomial ``exp`` / ``log1p`` that LLVM can vectorise: numba's
``math.exp`` is a scalar libm call, ~10x slower here). Softplus and the gate's sigmoid are computed in
separate vectorisable passes over time. The state before every ``checkpoint_every``-th step is saved; backward
recomputes one such chunk at a time into a (chunk + 1, N) buffer and walks it back, so training memory is
O(L * d_inner) rather than O(L * d_inner * N). Gradients of B and C are summed over channels per group of channels into
(batch, groups, L, N) buffers and reduced afterwards in torch: no atomics, deterministic for any thread count.

The kernels are compiled when this module is first imported, for float32 and float64 (``cache=True``: once per
machine, then loaded from numba's cache).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

if "numba" not in sys.modules:
    # numba's OpenMP pool starts one thread per core, and its idle threads spin. Where a launcher gives each of N
    # processes fewer threads (torchrun and accelerate set OMP_NUM_THREADS=1), a per-core pool in every process
    # oversubscribes the cores: 2 processes on 2 cores trained 10x slower (bench/RESULTS.md). The pool is sized
    # from torch's thread count when numba is first imported; NUMBA_NUM_THREADS set by the user wins.
    os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, torch.get_num_threads())))

try:  # transformers' remote-code import check skips try blocks: numba stays optional for Hub users
    import numba
    from numba import njit, prange
    from numba.core import types
    from numba.extending import intrinsic, overload
except ImportError as error:
    raise ImportError("the fused CPU selective scan needs numba (pip install numba)") from error

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


@njit(inline="always", cache=True, fastmath=_FAST)
def _sigmoid(x, one):
    return one / (one + exp_vectorisable(-x))


@njit(inline="always", cache=True, fastmath=_FAST)
def _softplus(x, zero):
    return max(x, zero) + log1p_vectorisable(exp_vectorisable(-abs(x)))


@njit(inline="always", cache=True, fastmath=_FAST)
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
        if kind == "forward":
            signatures.append(types.void(seq, seq, c2, c3, c3, c1, seq, c1, flag, flag, flag, flag, flag, flag,
                                         seq, c4))
        elif kind == "backward":
            signatures.append(types.void(seq, seq, seq, c2, c3, c3, c1, seq, c1, c4, flag, flag, flag, flag, flag,
                                         flag, seq, seq, seq, c3, c2, c2, c4, c4, seq))
        elif kind == "conv":  # depthwise conv + SiLU, both directions
            signatures.append(types.void(seq, c2, c1, c2, c1, c3, c3))
        else:  # its gradient
            signatures.append(types.void(seq, c2, c1, c2, c1, seq, seq, seq, c3, c2, c3, c2))
    return signatures


@njit(inline="always", cache=True, fastmath=_FAST)
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


@njit(_signatures("forward"), parallel=True, cache=True, fastmath=_FAST)
def scan_forward(u, delta, A, B, C, D, z, delta_bias, softplus, has_D, has_z, has_bias, reverse, accumulate, out,
                 checkpoints):
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
    for task in prange(batch * d_inner):
        b = task // d_inner
        d = task % d_inner
        state = np.zeros(n_state, dtype=u.dtype)
        time_steps = np.empty(length, dtype=u.dtype)
        ys = np.empty(length, dtype=u.dtype)
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


@njit(inline="always", cache=True, fastmath=_FAST)
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


@njit(_signatures("backward"), parallel=True, cache=True, fastmath=_FAST)
def scan_backward(
    grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, softplus, has_D, has_z, has_bias, reverse, has_y,
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
    for task in prange(batch * groups):
        b = task // groups
        g = task % groups
        states = np.empty((checkpoint_every + 1, n_state), dtype=u.dtype)  # states[i + 1] = h after step i
        decays = np.empty((checkpoint_every, n_state), dtype=u.dtype)
        time_steps = np.empty(checkpoint_every, dtype=u.dtype)
        softplus_slopes = np.empty(checkpoint_every, dtype=u.dtype)
        gate_sigmoids = np.empty(checkpoint_every, dtype=u.dtype)
        grad_state = np.empty(n_state, dtype=u.dtype)
        grad_A = np.empty(n_state, dtype=u.dtype)
        sums = np.empty(2, dtype=u.dtype)  # grad_D, grad_bias of the channel
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


@njit(inline="always", cache=True, fastmath=_FAST)
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


@njit(inline="always", cache=True, fastmath=_FAST)
def _conv_transposed(grad_pre, grad_pre_b, weight, weight_b, d, length, out, width):
    """out[t] = d(loss)/d(x[t]) from the pre-activation gradients (laid out as in ``conv_silu_backward``): x[t]
    fed the causal conv's position t + K - 1 - k and the anti-causal one's t - K + 1 + k, with tap k."""
    for t in range(length):
        total = weight[d, 0] * grad_pre[t + 2 * (width - 1)] + weight_b[d, 0] * grad_pre_b[t]
        for k in range(1, width):
            total += weight[d, k] * grad_pre[t + 2 * (width - 1) - k] + weight_b[d, k] * grad_pre_b[t + k]
        out[t] = total


@njit(_signatures("conv"), parallel=True, cache=True, fastmath=_FAST)
def conv_silu_forward(x, weight, bias, weight_b, bias_b, out, out_b):
    """Both directions' depthwise conv + SiLU in one pass over x (batch, d_inner, L), any strides: out is the causal
    conv (out[t] reads x[t - K + 1 .. t]), out_b the anti-causal one (out_b[t] reads x[t + K - 1 .. t], weight
    index k on x[t + K - 1 - k]: the causal conv of the flipped sequence, flipped back). weight, weight_b
    (d_inner, K); bias, bias_b (d_inner,); out, out_b (batch, d_inner, L)."""
    batch, d_inner, length = x.shape
    width = weight.shape[1]
    one = x.dtype.type(1.0)
    for task in prange(batch * d_inner):
        b = task // d_inner
        d = task % d_inner
        padded = np.zeros(length + 2 * (width - 1), dtype=x.dtype)  # x with K - 1 zeros on each side
        for t in range(length):
            padded[t + width - 1] = x[b, d, t]
        if width == 4:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, out[b, d], out_b[b, d], 4)
        else:
            _conv_both(padded, weight, bias, weight_b, bias_b, d, length, out[b, d], out_b[b, d], width)
        for t in range(length):
            out[b, d, t] *= _sigmoid(out[b, d, t], one)
            out_b[b, d, t] *= _sigmoid(out_b[b, d, t], one)


@njit(_signatures("conv_backward"), parallel=True, cache=True, fastmath=_FAST)
def conv_silu_backward(x, weight, bias, weight_b, bias_b, grad_out, grad_out_b, grad_x, grad_weight_parts,
                       grad_bias_parts, grad_weight_b_parts, grad_bias_b_parts):
    """Gradient of ``conv_silu_forward`` given the gradients of out and out_b (batch, d_inner, L): writes grad_x
    (batch, d_inner, L, any strides; both directions summed) and per-batch partials of the weights' gradients
    (batch, d_inner, K) and the biases' (batch, d_inner). The pre-activations are recomputed, not saved."""
    batch, d_inner, length = x.shape
    width = weight.shape[1]
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    for task in prange(batch * d_inner):
        b = task // d_inner
        d = task % d_inner
        span = length + 2 * (width - 1)
        padded = np.zeros(span, dtype=x.dtype)
        # gradients of the pre-activations, position t at t + K - 1 with zeros around (for the transposed conv)
        grad_pre = np.zeros(span, dtype=x.dtype)
        grad_pre_b = np.zeros(span, dtype=x.dtype)
        pre = np.empty(length, dtype=x.dtype)
        pre_b = np.empty(length, dtype=x.dtype)
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


def set_threads(count: int) -> None:
    """Use ``count`` numba threads (capped by numba's pool size)."""
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
