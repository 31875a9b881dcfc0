"""Selective-scan backends for the Mamba-1 mixer, and the dispatch between them.

All compute the same function (mamba-ssm's ``selective_scan_fn`` semantics):

    delta = softplus(delta + delta_bias)                     (if asked)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t  (state per channel d and state index n)
    y_t   = <h_t, C_t> + D * u_t,   then   y_t *= silu(z_t)   (if z is given)

Shapes: u, delta, z (batch, d_inner, L); A (d_inner, N); B, C (batch, N, L); D, delta_bias (d_inner,).

| backend     | device | what                                                                              |
|-------------|--------|-----------------------------------------------------------------------------------|
| ``numba``   | CPU    | fused kernel, forward and backward (``selective_scan_numba``); the CPU default      |
| ``triton``  | CUDA   | fused kernel in Triton (``selective_scan_triton``); default when mamba-ssm is absent |
| ``mamba_ssm``| CUDA  | mamba-ssm's CUDA kernel, imported lazily; the CUDA default when it imports          |
| ``chunked`` | any    | pure PyTorch: parallel scan inside chunks; the portable fallback                    |
| ``reference``| any   | one Python step per token: the readable ground truth used by tests                 |

numba and Triton run as ``torch.library`` custom ops (``selective_scan_fused``), so ``torch.compile`` and
``torch.export`` work through them.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
import torch.nn.functional as F

from .selective_scan_fused import compute_dtype, numba_available, selective_scan_fused, triton_available

logger = logging.getLogger(__name__)

SCAN_BACKENDS = ("auto", "numba", "triton", "mamba_ssm", "chunked", "reference")
SCAN_BACKEND_ENV = "STRETCHYSNAKE_SCAN_BACKEND"


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    dtype = compute_dtype(u)
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
    """Solve one chunk of k steps with a parallel (Hillis-Steele) scan, exact at any decay.

    state (batch, d_inner, N); delta, delta_u (batch, k, d_inner); A (d_inner, N); B, C (batch, k, N).
    Returns y (batch, k, d_inner) and the state after the chunk.

    The recurrence h_t = a_t * h_{t-1} + x_t is composed in log2(k) rounds: after the round with offset j, each
    step holds the effect of the 2j steps up to it. Only products of per-step decays a = exp(delta * A) appear,
    never a division by one (<= 1 for A < 0), so nothing overflows at any decay, and no branch depends on the data.
    """
    decays = torch.exp(delta[..., None] * A)  # (batch, k, d_inner, N)
    states = delta_u[..., None] * B[:, :, None, :]  # x_t: (batch, k, d_inner, N)
    length, offset = delta.shape[1], 1
    while offset < length:
        states = torch.cat([states[:, :offset], states[:, offset:] + decays[:, offset:] * states[:, :-offset]], 1)
        decays = torch.cat([decays[:, :offset], decays[:, offset:] * decays[:, :-offset]], 1)
        offset *= 2
    states = states + decays * state[:, None]  # decays now hold the products a_0 ... a_t
    y = torch.einsum("btdn,btn->btd", states, C)
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
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, chunk_size: int = 16
):
    """Portable pure-PyTorch scan: same result as the reference, a few tensor ops per chunk instead of per token."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    delta_t = delta.transpose(1, 2).contiguous()  # (batch, L, d_inner)
    delta_u = (delta * u).transpose(1, 2).contiguous()  # (batch, L, d_inner)
    B_t = B.transpose(1, 2).contiguous()  # (batch, L, N)
    C_t = C.transpose(1, 2).contiguous()  # (batch, L, N)
    y = _ChunkedScan.apply(delta_t, delta_u, A, B_t, C_t, chunk_size).transpose(1, 2)  # (batch, d_inner, L)
    return _finish(y, u, D, z, out_dtype)


@functools.cache
def _mamba_ssm_function(name: str):
    """A function of mamba-ssm's ``selective_scan_interface``, or None when mamba-ssm cannot be imported."""
    try:
        from mamba_ssm.ops import selective_scan_interface

        return getattr(selective_scan_interface, name)
    except Exception as error:  # ImportError, or the CUDA extension failing to load
        logger.debug("mamba-ssm's %s is not usable: %s", name, error)
        return None


def load_mamba_ssm_scan():
    """mamba-ssm's CUDA ``selective_scan_fn``, or None when it cannot be imported."""
    return _mamba_ssm_function("selective_scan_fn")


def load_mamba_inner_fn():
    """mamba-ssm's fused ``mamba_inner_fn`` (conv, projections, scan, gate and out_proj), or None."""
    return _mamba_ssm_function("mamba_inner_fn")


# What each explicitly named backend needs: (device type it runs on or None for any, availability check).
_REQUIREMENTS = {
    "reference": (None, None),
    "chunked": (None, None),
    "numba": ("cpu", lambda: numba_available()),
    "triton": ("cuda", lambda: triton_available()),
    "mamba_ssm": ("cuda", lambda: load_mamba_ssm_scan() is not None),
}
_INSTALL_HINTS = {"numba": "pip install numba", "triton": "pip install triton", "mamba_ssm": "pip install mamba-ssm"}
_logged_backends: set[tuple[str, str]] = set()


# What `auto` tries, fastest first, per device type; anything else (or nothing available) gets chunked.
_AUTO_ORDER = {"cuda": ("mamba_ssm", "triton"), "cpu": ("numba",)}


def _available(name: str) -> bool:
    check = _REQUIREMENTS[name][1]
    return check is None or check()


def _auto_backend(device: torch.device) -> str:
    """The fastest backend available for a device."""
    return next((name for name in _AUTO_ORDER.get(device.type, ()) if _available(name)), "chunked")


def resolve_scan_backend(requested: str, device: torch.device) -> str:
    """The backend a call will use. The environment variable overrides the config."""
    name = os.environ.get(SCAN_BACKEND_ENV) or requested or "auto"
    if name not in SCAN_BACKENDS:
        raise ValueError(f"Unknown scan backend {name!r}; expected one of {SCAN_BACKENDS}.")
    if name == "auto":
        name = _auto_backend(device)
    else:
        device_type, _ = _REQUIREMENTS[name]
        if not _available(name):
            raise RuntimeError(
                f"scan backend {name!r} was asked for but cannot be imported ({_INSTALL_HINTS[name]})."
            )
        if device_type is not None and device.type != device_type:
            raise RuntimeError(
                f"scan backend {name!r} needs {device_type.upper()} tensors, got device {device}; "
                "use scan_backend='auto' to pick the fastest one for each device."
            )
    if (name, device.type) not in _logged_backends:
        _logged_backends.add((name, device.type))
        logger.info("StretchySnake selective scan backend: %s (device %s)", name, device.type)
    return name


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto", chunk_size=16
):
    """Dispatch to the chosen backend (see ``resolve_scan_backend``)."""
    name = resolve_scan_backend(backend, u.device)
    if name == "mamba_ssm":
        return load_mamba_ssm_scan()(
            u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus
        )
    if name in ("numba", "triton"):
        return selective_scan_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if name == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
