"""Selective-scan backends for the Mamba-1 mixer.

All three compute the same function (mamba-ssm's ``selective_scan_fn`` semantics):

    delta = softplus(delta + delta_bias)                     (if asked)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t  (state per channel d and state index n)
    y_t   = <h_t, C_t> + D * u_t,   then   y_t *= silu(z_t)   (if z is given)

Shapes: u, delta, z (batch, d_inner, L); A (d_inner, N); B, C (batch, N, L); D, delta_bias (d_inner,).

- ``selective_scan_reference``: one Python step per token; the readable ground truth used by tests.
- ``selective_scan_chunked``: the default off CUDA. Walks the sequence in chunks; inside a chunk the
  recurrence is solved in closed form with cumulative sums, in float32 for float32/16-bit inputs.
- mamba-ssm's CUDA kernel: imported lazily (upstream mamba-ssm cannot even be imported without its CUDA
  build) and used only when it imports and the tensors live on a CUDA device.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SCAN_BACKENDS = ("auto", "reference", "chunked", "mamba_ssm")
SCAN_BACKEND_ENV = "STRETCHYSNAKE_SCAN_BACKEND"

# Inside a chunk the state is exp(S_t) * cumsum(exp(-S_s) * x_s) with S the cumulative log-decay (<= 0), taken
# relative to the chunk's middle step, so the largest factors are exp(S_0 - S_mid) and exp(S_mid - S_end). Each
# must stay far below float32 overflow (e^88) even after multiplying inputs and summing over the chunk, so a chunk
# where either half's log-decay range exceeds this is split. (The decay can sit almost all in one half: bounding
# only the chunk's total let exp(~100) overflow to inf and gave NaN in training.)
_MAX_HALF_CHUNK_LOG_DECAY = 60.0


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    # The state is kept in float32 for half-precision inputs (fp16/bf16 states overflow or drift); float64
    # inputs stay float64 so the backends can be compared tightly.
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    dtype = _compute_dtype(u)
    u = u.to(dtype)
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A.to(dtype), B.to(dtype), C.to(dtype)


def _finish(y, u, D, z, out_dtype):
    # y, u, z: (batch, d_inner, L)
    if D is not None:
        y = y + u * D.to(y.dtype)[..., None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Sequential scan, one step per token (mamba-ssm ``selective_scan_ref`` semantics)."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, d_inner, length = u.shape
    delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # (batch, d_inner, L, N)
    delta_B_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)  # (batch, d_inner, L, N)
    state = u.new_zeros(batch, d_inner, A.shape[1])  # (batch, d_inner, N)
    ys = []
    for t in range(length):
        state = delta_A[:, :, t] * state + delta_B_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # (batch, d_inner, L)
    return _finish(y, u, D, z, out_dtype)


def _scan_chunk(state, delta, delta_u, A, B, C):
    """Solve one chunk in closed form, splitting it while its decay range is too wide for float32.

    state (batch, d_inner, N); delta, delta_u (batch, k, d_inner); A (d_inner, N); B, C (batch, k, N).
    Returns y (batch, k, d_inner) and the state after the chunk.
    """
    length = delta.shape[1]
    if length == 1:  # one plain recurrence step: exact for any decay, however strong
        state = torch.exp(delta[:, 0, :, None] * A) * state + delta_u[:, 0, :, None] * B[:, 0, None, :]
        return torch.einsum("bdn,bn->bd", state, C[:, 0]).unsqueeze(1), state
    # Running sums over the chunk are GEMMs with a lower-triangular matrix: far faster than torch.cumsum on CPU.
    causal = torch.ones(length, length, device=delta.device, dtype=delta.dtype).tril_()
    # The log-decay of step t is delta_t * A, so its running sum factorises as S_t = cumsum(delta)_t * A.
    cum_delta = torch.matmul(causal, delta)  # (batch, k, d_inner)
    middle = cum_delta[:, length // 2, None]  # (batch, 1, d_inner)
    half_ranges = torch.stack([middle[:, 0] - cum_delta[:, 0], cum_delta[:, -1] - middle[:, 0]])  # (2, batch, d_inner)
    widest_half = float((half_ranges[..., None] * -A).detach().max())
    if widest_half > _MAX_HALF_CHUNK_LOG_DECAY:  # split once into pieces that each fit (they re-check themselves)
        pieces = min(length, math.ceil(2 * widest_half / _MAX_HALF_CHUNK_LOG_DECAY))
        ys = []
        for parts in zip(*(t.tensor_split(pieces, dim=1) for t in (delta, delta_u, B, C))):
            y, state = _scan_chunk(state, parts[0], parts[1], A, parts[2], parts[3])
            ys.append(y)
        return torch.cat(ys, dim=1), state
    # h_t = exp(S_t) * (h_0 + sum_{s<=t} exp(-S_s) x_s). S is taken relative to the chunk's middle step so that
    # exp(S) and exp(-S) both stay within exp(_MAX_HALF_CHUNK_LOG_DECAY).
    log_decay = (cum_delta - middle)[..., None] * A  # S_t - S_mid: (batch, k, d_inner, N)
    decay = torch.exp(log_decay)
    # exp(-S) gets its own exp: through 1 / exp(S), autograd would form exp(-2S), which overflows float32.
    weighted = torch.exp(-log_decay) * delta_u[..., None] * B[:, :, None, :]  # x_s * exp(-S_s)
    # h_0 joins the first input (every step t >= 0 sums over it), scaled by exp(S_mid) as the rest are.
    weighted[:, 0] += state * torch.exp(middle[:, 0, :, None] * A)
    states = decay * torch.matmul(causal, weighted.flatten(2)).view_as(decay)
    y = torch.einsum("bkdn,bkn->bkd", states, C)
    return y, states[:, -1]


class _ChunkedScan(torch.autograd.Function):
    """The chunked recurrence with chunk-wise recomputation in backward.

    Forward keeps only its inputs and the state at each chunk start; backward recomputes one chunk at a time,
    last to first, carrying the gradient of the state between chunks. Memory is O(L * d_inner) instead of the
    O(L * d_inner * N) per-chunk intermediates plain autograd would keep.
    """

    @staticmethod
    def forward(ctx, delta, delta_u, A, B, C, chunk_size: int):
        # delta, delta_u: (batch, L, d_inner); A: (d_inner, N); B, C: (batch, L, N) -> y (batch, L, d_inner)
        state = delta.new_zeros(delta.shape[0], delta.shape[2], A.shape[1])
        starts, ys = [], []
        # One split per tensor, not a slice per chunk (see backward for why slices matter there).
        for delta_c, delta_u_c, B_c, C_c in zip(*(t.split(chunk_size, dim=1) for t in (delta, delta_u, B, C))):
            starts.append(state)
            y, state = _scan_chunk(state, delta_c, delta_u_c, A, B_c, C_c)
            ys.append(y)
        ctx.save_for_backward(delta, delta_u, A, B, C, torch.stack(starts))
        ctx.chunk_size = chunk_size
        return torch.cat(ys, dim=1)

    @staticmethod
    def backward(ctx, grad_y):
        delta, delta_u, A, B, C, starts = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (delta, delta_u, B, C)]
        grad_A = torch.zeros_like(A)
        grad_state = torch.zeros_like(starts[0])
        length, size = delta.shape[1], ctx.chunk_size
        for index in reversed(range(len(starts))):
            chunk = slice(index * size, min((index + 1) * size, length))
            with torch.enable_grad():
                inputs = [t[:, chunk].detach().requires_grad_() for t in (delta, delta_u, B, C)]
                A_leaf = A.detach().requires_grad_()
                state = starts[index].detach().requires_grad_()
                y, state_end = _scan_chunk(state, inputs[0], inputs[1], A_leaf, inputs[2], inputs[3])
                torch.autograd.backward((y, state_end), (grad_y[:, chunk], grad_state))
            for grad, leaf in zip(grads, inputs):
                grad[:, chunk] = leaf.grad  # written in place: no full-length gradient per chunk
            grad_A += A_leaf.grad
            grad_state = state.grad
        return grads[0], grads[1], grad_A, grads[2], grads[3], None


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, chunk_size: int = 32
):
    """Fast pure-PyTorch scan: same result as the reference, a few tensor ops per chunk instead of per token."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    delta_t = delta.transpose(1, 2).contiguous()  # (batch, L, d_inner)
    delta_u = (delta * u).transpose(1, 2).contiguous()  # (batch, L, d_inner)
    B_t = B.transpose(1, 2).contiguous()  # (batch, L, N)
    C_t = C.transpose(1, 2).contiguous()  # (batch, L, N)
    y = _ChunkedScan.apply(delta_t, delta_u, A, B_t, C_t, chunk_size).transpose(1, 2)  # (batch, d_inner, L)
    return _finish(y, u, D, z, out_dtype)


_mamba_ssm_scan = None
_mamba_ssm_checked = False


def load_mamba_ssm_scan():
    """mamba-ssm's CUDA ``selective_scan_fn``, or None when it cannot be imported."""
    global _mamba_ssm_scan, _mamba_ssm_checked
    if not _mamba_ssm_checked:
        _mamba_ssm_checked = True
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            _mamba_ssm_scan = selective_scan_fn
        except Exception as error:  # ImportError, or the CUDA extension failing to load
            logger.debug("mamba-ssm is not usable: %s", error)
    return _mamba_ssm_scan


_logged_backends: set[str] = set()


def resolve_scan_backend(requested: str, device: torch.device) -> str:
    """The backend a call will use. The environment variable overrides the config."""
    name = os.environ.get(SCAN_BACKEND_ENV) or requested or "auto"
    if name not in SCAN_BACKENDS:
        raise ValueError(f"Unknown scan backend {name!r}; expected one of {SCAN_BACKENDS}.")
    if name == "auto":
        name = "mamba_ssm" if device.type == "cuda" and load_mamba_ssm_scan() is not None else "chunked"
    elif name == "mamba_ssm":
        if load_mamba_ssm_scan() is None:
            raise RuntimeError("scan backend 'mamba_ssm' was asked for but mamba-ssm cannot be imported.")
        if device.type != "cuda":
            raise RuntimeError(f"scan backend 'mamba_ssm' needs CUDA tensors, got device {device}.")
    if name not in _logged_backends:
        _logged_backends.add(name)
        logger.info("StretchySnake selective scan backend: %s (device %s)", name, device)
    return name


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto", chunk_size=32
):
    """Dispatch to the chosen backend (see ``resolve_scan_backend``)."""
    name = resolve_scan_backend(backend, u.device)
    if name == "mamba_ssm":
        return load_mamba_ssm_scan()(
            u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus
        )
    if name == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
