"""Fused Mamba-1 selective scan for CUDA tensors in Triton (forward and backward); no nvcc needed.

The same algorithm as ``selective_scan_numba``: the exact per-step recurrence with an fp32 state, one program
per (batch, block of ``BLOCK_D`` channels) holding a (BLOCK_D, N) state tile in registers, the state saved
before every chunk of steps, and a backward that recomputes one chunk at a time (into a per-program scratch
buffer in global memory) and walks it back. dB / dC are summed over the block's channels and written per block,
then reduced in torch (no atomics: deterministic). Sequences are laid out (batch, L, d_inner) so each step loads
BLOCK_D consecutive channels.

Known limit: the grid has batch * d_inner / BLOCK_D programs, too few to fill a large GPU at batch 1.
On CPU the kernels run under ``TRITON_INTERPRET=1`` (how the tests check them).
"""

from __future__ import annotations

import torch

try:  # transformers' remote-code import check skips try blocks: triton stays optional
    import triton
    import triton.language as tl
except ImportError as error:
    raise ImportError("the Triton selective scan needs triton (it ships with CUDA builds of torch)") from error

BLOCK_D = 32
MAX_CHUNK = 128  # the largest checkpoint interval the scratch buffer is sized for (CHECKPOINT_EVERY)


@triton.jit
def _softplus(x):
    e = tl.exp(-tl.abs(x))
    w = 1.0 + e
    # log1p(e): w rounds e away for small e (dt ~ 1e-3 lost 1e-4 of its value); x / (w - 1) restores it.
    return tl.maximum(x, 0.0) + tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _channel_block(A_ptr, D_ptr, bias_ptr, block, d_inner, n_state, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                   BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """A program's channels d (BLOCK,) and state indices n (BLOCK_N,), their masks, and its slices of A
    (BLOCK, BLOCK_N), delta_bias and D (BLOCK,), in float32 (zeros where absent)."""
    d = block * BLOCK + tl.arange(0, BLOCK)
    n = tl.arange(0, BLOCK_N)
    d_ok = d < d_inner
    n_ok = n < n_state
    tile_ok = d_ok[:, None] & n_ok[None, :]
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=tile_ok, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32) if HAS_BIAS else tl.zeros([BLOCK], tl.float32)
    skip = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32) if HAS_D else tl.zeros([BLOCK], tl.float32)
    return d, n, d_ok, n_ok, tile_ok, A, bias, skip


@triton.jit
def _step_inputs(u_ptr, delta_ptr, B_ptr, b, s, d, n, d_ok, n_ok, bias, length, d_inner, n_state,
                 SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr):
    """Scan step s's position t (s, or L - 1 - s scanning in reverse), offsets and masks, u_t and the raw
    delta_t + bias (BLOCK,), dt_t (0 past the end, so such steps leave the state unchanged) and B_t (BLOCK_N,)."""
    if REVERSE:
        t = length - 1 - s
    else:
        t = s
    row_ok = d_ok & (d * 0 + s < length)  # (vectors: the interpreter wants tensor masks)
    step_ok = n_ok & (n * 0 + s < length)
    row = (b * length + t) * d_inner + d
    x = tl.load(u_ptr + row, mask=row_ok, other=0.0).to(tl.float32)
    raw = tl.load(delta_ptr + row, mask=row_ok, other=0.0).to(tl.float32) + bias
    dt = _softplus(raw) if SOFTPLUS else raw
    dt = tl.where(row_ok, dt, 0.0)
    B_t = tl.load(B_ptr + (b * length + t) * n_state + n, mask=step_ok, other=0.0).to(tl.float32)
    return t, row, row_ok, step_ok, x, raw, dt, B_t


@triton.jit
def _scan_forward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, checkpoints_ptr,
    length, d_inner, n_state, chunks, every,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # u, delta, z, out: (batch, L, d_inner); A: (d_inner, N); B, C: (batch, L, N); D, bias: (d_inner,);
    # checkpoints: (batch, d_inner, chunks, N), chunks in scan order
    b = tl.program_id(0)
    d, n, d_ok, n_ok, tile_ok, A, bias, skip = _channel_block(
        A_ptr, D_ptr, bias_ptr, tl.program_id(1), d_inner, n_state, HAS_D, HAS_BIAS, BLOCK, BLOCK_N)
    state = tl.zeros([BLOCK, BLOCK_N], tl.float32)
    for chunk in range(0, chunks):
        ckpt = checkpoints_ptr + ((b * d_inner + d[:, None]) * chunks + chunk) * n_state + n[None, :]
        tl.store(ckpt, state, mask=tile_ok)
        for i in range(0, every):
            t, row, row_ok, step_ok, x, raw, dt, B_t = _step_inputs(
                u_ptr, delta_ptr, B_ptr, b, chunk * every + i, d, n, d_ok, n_ok, bias, length, d_inner, n_state,
                SOFTPLUS, REVERSE)
            C_t = tl.load(C_ptr + (b * length + t) * n_state + n, mask=step_ok, other=0.0).to(tl.float32)
            state = tl.exp(dt[:, None] * A) * state + (dt * x)[:, None] * B_t[None, :]
            y = tl.sum(state * C_t[None, :], axis=1) + skip * x
            if HAS_Z:
                gate = tl.load(z_ptr + row, mask=row_ok, other=0.0).to(tl.float32)
                y = y * gate * _sigmoid(gate)
            if ACCUMULATE:
                y += tl.load(out_ptr + row, mask=row_ok, other=0.0)
            tl.store(out_ptr + row, y, mask=row_ok)


@triton.jit
def _scan_backward_kernel(
    grad_out_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, checkpoints_ptr, scratch_ptr,
    grad_u_ptr, grad_delta_ptr, grad_z_ptr, grad_A_ptr, grad_D_ptr, grad_bias_ptr, grad_B_ptr, grad_C_ptr, y_ptr,
    length, d_inner, n_state, chunks, every,
    SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    REVERSE: tl.constexpr, HAS_Y: tl.constexpr, BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    # as forward, plus grad_out, grad_u, grad_delta, grad_z (added to), y (the gated output, added to when HAS_Y):
    # (batch, L, d_inner); grad_A: (batch, d_inner, N);
    # grad_D, grad_bias: (batch, d_inner); grad_B, grad_C: (batch, blocks, L, N);
    # scratch: (batch * blocks, CHUNK + 1, BLOCK, BLOCK_N)
    b = tl.program_id(0)
    block = tl.program_id(1)
    blocks = tl.num_programs(1)
    d, n, d_ok, n_ok, tile_ok, A, bias, skip = _channel_block(
        A_ptr, D_ptr, bias_ptr, block, d_inner, n_state, HAS_D, HAS_BIAS, BLOCK, BLOCK_N)
    scratch = scratch_ptr + (b * blocks + block) * (CHUNK + 1) * BLOCK * BLOCK_N
    tile = tl.arange(0, BLOCK)[:, None] * BLOCK_N + n[None, :]
    grad_state = tl.zeros([BLOCK, BLOCK_N], tl.float32)
    grad_A = tl.zeros([BLOCK, BLOCK_N], tl.float32)
    grad_D = tl.zeros([BLOCK], tl.float32)
    grad_bias = tl.zeros([BLOCK], tl.float32)
    for reversed_chunk in range(0, chunks):
        chunk = chunks - 1 - reversed_chunk
        ckpt = checkpoints_ptr + ((b * d_inner + d[:, None]) * chunks + chunk) * n_state + n[None, :]
        state = tl.load(ckpt, mask=tile_ok, other=0.0)
        tl.store(scratch + tile, state)
        for i in range(0, every):  # recompute the chunk's states into scratch[1..every]
            t, row, row_ok, step_ok, x, raw, dt, B_t = _step_inputs(
                u_ptr, delta_ptr, B_ptr, b, chunk * every + i, d, n, d_ok, n_ok, bias, length, d_inner, n_state,
                SOFTPLUS, REVERSE)
            state = tl.exp(dt[:, None] * A) * state + (dt * x)[:, None] * B_t[None, :]
            tl.store(scratch + (i + 1) * BLOCK * BLOCK_N + tile, state)
        tl.debug_barrier()
        for reversed_i in range(0, every):  # walk the chunk back
            i = every - 1 - reversed_i
            t, row, row_ok, step_ok, x, raw, dt, B_t = _step_inputs(
                u_ptr, delta_ptr, B_ptr, b, chunk * every + i, d, n, d_ok, n_ok, bias, length, d_inner, n_state,
                SOFTPLUS, REVERSE)
            C_t = tl.load(C_ptr + (b * length + t) * n_state + n, mask=step_ok, other=0.0).to(tl.float32)
            state = tl.load(scratch + (i + 1) * BLOCK * BLOCK_N + tile)
            previous = tl.load(scratch + i * BLOCK * BLOCK_N + tile)
            decay = tl.exp(dt[:, None] * A)
            grad_y = tl.load(grad_out_ptr + row, mask=row_ok, other=0.0).to(tl.float32)
            y = tl.sum(state * C_t[None, :], axis=1) + skip * x
            if HAS_Z:
                gate = tl.load(z_ptr + row, mask=row_ok, other=0.0).to(tl.float32)
                sigmoid = _sigmoid(gate)
                grad_z = grad_y * y * sigmoid * (1.0 + gate * (1.0 - sigmoid))
                grad_z += tl.load(grad_z_ptr + row, mask=row_ok, other=0.0)
                tl.store(grad_z_ptr + row, grad_z, mask=row_ok)
                grad_y = grad_y * gate * sigmoid
                y = y * gate * sigmoid
            if HAS_Y:
                tl.store(y_ptr + row, y + tl.load(y_ptr + row, mask=row_ok, other=0.0), mask=row_ok)
            grad_h = grad_state + grad_y[:, None] * C_t[None, :]  # dLoss/dh_t
            step = (b * blocks + block) * length + t
            tl.store(grad_C_ptr + step * n_state + n, tl.sum(grad_y[:, None] * state, axis=0), mask=step_ok)
            tl.store(grad_B_ptr + step * n_state + n, tl.sum(grad_h * (dt * x)[:, None], axis=0), mask=step_ok)
            decayed_previous = decay * previous
            grad_dt = tl.sum(grad_h * (A * decayed_previous + B_t[None, :] * x[:, None]), axis=1)
            grad_A += grad_h * dt[:, None] * decayed_previous
            grad_x = tl.sum(grad_h * B_t[None, :], axis=1)
            grad_state = grad_h * decay  # dLoss/dh_{t-1} through h_t
            tl.store(grad_u_ptr + row, grad_y * skip + grad_x * dt, mask=row_ok)
            if SOFTPLUS:
                grad_dt = grad_dt * _sigmoid(raw)
            grad_dt = tl.where(row_ok, grad_dt, 0.0)
            tl.store(grad_delta_ptr + row, grad_dt, mask=row_ok)
            grad_D += grad_y * x
            grad_bias += grad_dt
        tl.debug_barrier()
    tl.store(grad_A_ptr + (b * d_inner + d[:, None]) * n_state + n[None, :], grad_A, mask=tile_ok)
    tl.store(grad_D_ptr + b * d_inner + d, grad_D, mask=d_ok)
    tl.store(grad_bias_ptr + b * d_inner + d, grad_bias, mask=d_ok)


def _rows(x: torch.Tensor) -> torch.Tensor:
    # (batch, d_inner, L) -> contiguous (batch, L, d_inner)
    return x.transpose(1, 2).contiguous()


def _optional(x: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0) if x is None else x.contiguous()


def _row_buffer(x: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A contiguous float32 (batch, L, d_inner) buffer for a (batch, d_inner, L) tensor the kernels add to: its own
    memory where that is already such a buffer, else a copy (second value True: copy the result back)."""
    if x is None:
        return torch.zeros(like.shape[0], like.shape[2], like.shape[1], device=like.device, dtype=torch.float32), False
    rows = x.transpose(1, 2)
    if rows.is_contiguous() and rows.dtype == torch.float32:
        return rows, False
    return rows.to(torch.float32).contiguous(), True  # (.to(memory_format=) keeps a float32 view as it is)


def scan_forward(u, delta, A, B, C, D, z, delta_bias, softplus, checkpoints, reverse=False, out=None,
                 accumulate=False):
    """u, delta, z (batch, d_inner, L); A (d_inner, N); B, C (batch, L, N) contiguous; D, delta_bias (d_inner,)
    or None; checkpoints (batch, d_inner, chunks, N) float32, written. Writes out (batch, d_inner, L), or adds to it
    with ``accumulate`` (a new float32 tensor when None, which is returned). ``reverse`` scans from the last
    position to the first."""
    batch, d_inner, length = u.shape
    n_state = A.shape[1]
    chunks = checkpoints.shape[2]
    every = -(-length // chunks)
    assert every <= MAX_CHUNK
    rows, copy_back = _row_buffer(out, u)
    grid = (batch, triton.cdiv(d_inner, BLOCK_D))
    _scan_forward_kernel[grid](
        _rows(u), _rows(delta), A.contiguous(), B, C, _optional(D, u), _rows(z) if z is not None else u.new_empty(0),
        _optional(delta_bias, u), rows, checkpoints, length, d_inner, n_state, chunks, every,
        SOFTPLUS=softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        REVERSE=reverse, ACCUMULATE=accumulate, BLOCK=BLOCK_D, BLOCK_N=triton.next_power_of_2(n_state),
    )
    if out is None:
        return rows.transpose(1, 2)
    if copy_back:
        out.copy_(rows.transpose(1, 2))
    return out


def scan_backward(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, softplus, reverse=False, grad_z=None,
                  y_out=None):
    """Gradients of ``scan_forward``: grad_u, grad_delta (raw delta), grad_z (batch, d_inner, L);
    grad_A_parts (batch, d_inner, N); grad_D_parts, grad_bias_parts (batch, d_inner);
    grad_B_parts, grad_C_parts (batch, blocks, L, N), all float32. grad_z, if given, is added to and returned; the
    recomputed gated output is added to y_out (batch, d_inner, L) if given."""
    batch, d_inner, length = u.shape
    n_state = A.shape[1]
    chunks = checkpoints.shape[2]
    every = -(-length // chunks)
    blocks = triton.cdiv(d_inner, BLOCK_D)
    block_n = triton.next_power_of_2(n_state)
    f32 = dict(device=u.device, dtype=torch.float32)
    grad_u, grad_delta = (torch.empty(batch, length, d_inner, **f32) for _ in range(2))
    grad_z_rows, copy_z = _row_buffer(grad_z, u)
    y_rows, copy_y = _row_buffer(y_out, u) if y_out is not None else (u.new_empty(0, dtype=torch.float32), False)
    grad_A = torch.empty(batch, d_inner, n_state, **f32)
    grad_D, grad_bias = torch.empty(batch, d_inner, **f32), torch.empty(batch, d_inner, **f32)
    grad_B, grad_C = (torch.zeros(batch, blocks, length, n_state, **f32) for _ in range(2))
    scratch = torch.empty(batch * blocks, MAX_CHUNK + 1, BLOCK_D, block_n, **f32)
    _scan_backward_kernel[(batch, blocks)](
        _rows(grad_out), _rows(u), _rows(delta), A.contiguous(), B, C, _optional(D, u),
        _rows(z) if z is not None else u.new_empty(0), _optional(delta_bias, u), checkpoints, scratch,
        grad_u, grad_delta, grad_z_rows, grad_A, grad_D, grad_bias, grad_B, grad_C, y_rows,
        length, d_inner, n_state, chunks, every,
        SOFTPLUS=softplus, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        REVERSE=reverse, HAS_Y=y_out is not None, BLOCK=BLOCK_D, BLOCK_N=block_n, CHUNK=MAX_CHUNK,
    )
    if copy_z:
        grad_z.copy_(grad_z_rows.transpose(1, 2))
    if copy_y:
        y_out.copy_(y_rows.transpose(1, 2))
    return (grad_u.transpose(1, 2), grad_delta.transpose(1, 2),
            grad_z if grad_z is not None else grad_z_rows.transpose(1, 2), grad_A, grad_D, grad_bias, grad_B, grad_C)
