"""The fused selective scan as PyTorch custom ops: numba on CPU, Triton on CUDA.

``torch.ops.stretchysnake.selective_scan_fwd`` / ``selective_scan_bwd`` are registered with
``torch.library.custom_op`` (a fake implementation for shapes, ``register_autograd`` for gradients), so
``torch.compile`` and ``torch.export`` see one opaque op instead of tracing into numba or Triton. The CPU kernel
is numba's, the CUDA kernel Triton's; each is imported on first use, so a missing numba or triton only matters
to the device that needs it.

Semantics and shapes are those of ``selective_scan_reference``: u, delta, z (batch, d_inner, L); A (d_inner, N);
B, C (batch, N, L); D, delta_bias (d_inner,). The state is float32 (float64 for float64 inputs on CPU).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

from . import custom_ops
from .custom_ops import register_differentiable_op

CHECKPOINT_EVERY = 128  # at most this many steps between the states forward saves for backward


# The kernels are imported on first use, in the `from .module import` form: transformers copies the files that
# form names into a saved model folder, so trust_remote_code users get the kernels too.
@functools.cache
def numba_kernels():
    """The numba kernels (each compiled, or loaded from numba's cache, when a call first needs it); raises
    ImportError without numba."""
    from .selective_scan_numba import shared_copy

    kernels = shared_copy()  # one copy per process of the same source (a saved model's code may be another)
    return SimpleNamespace(scan_forward=kernels.scan_forward, scan_backward=kernels.scan_backward,
                           conv_silu_forward=kernels.conv_silu_forward, conv_silu_backward=kernels.conv_silu_backward,
                           gradient_groups=kernels.gradient_groups, prepare=kernels.prepare)


@functools.cache
def triton_kernels():
    """The Triton kernels' launchers; raises ImportError without triton."""
    from .selective_scan_triton import scan_backward, scan_forward

    return SimpleNamespace(scan_forward=scan_forward, scan_backward=scan_backward)


def numba_available() -> bool:
    try:
        numba_kernels()
        return True
    except ImportError:
        return False


def triton_available() -> bool:
    try:
        triton_kernels()
        return True
    except ImportError:
        return False


def prepare_numba_kernels(x: torch.Tensor, n_state: int, tensors) -> None:
    """Before a fused op's first CPU call: the numba kernels it needs in `x`'s compute dtype for state size
    `n_state`, those of its backward too when autograd will call it (any of `tensors` requires grad), loaded or
    compiled together, so a first training step says once that it compiles and for how long."""
    if not custom_ops.uses_numba(x) or torch.compiler.is_compiling():  # compiled graphs: the op's first call loads
        return
    kinds = ["conv_silu_forward", "scan_forward"]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        kinds += ["conv_silu_backward", "scan_backward"]
    numba_kernels().prepare(kinds, "float64" if compute_dtype(x) == torch.float64 else "float32", n_state)


def _checkpoint_count(length):
    return -(-length // CHECKPOINT_EVERY)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """What the scans compute in: float32, or float64 for float64 inputs (a 16-bit state overflows or drifts;
    float64 stays float64 so backends can be compared tightly)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _state_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 and u.device.type == "cpu" else torch.float32


def _numpy(x: torch.Tensor):
    """A view for numba: sequences keep their strides (the kernels take any), other arrays must be contiguous."""
    return x.detach().numpy()


def _numpy_or_empty(x: torch.Tensor | None, like: torch.Tensor, dims: int):
    # numba types every argument, used or not: an absent input is an empty array of the same rank
    return _numpy(like.new_empty((0,) * dims) if x is None else x.to(like.dtype).contiguous() if dims == 1
                  else x.to(like.dtype))


def _selective_scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns y (batch, d_inner, L) in u's dtype and the saved states (batch, d_inner, chunks, N)."""
    batch, d_inner, length = u.shape
    state_dtype = _state_dtype(u)
    checkpoints = u.new_empty(batch, d_inner, _checkpoint_count(length), A.shape[1], dtype=state_dtype)
    B_rows, C_rows = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (batch, L, N)
    if not custom_ops.uses_numba(u):
        out = triton_kernels().scan_forward(u, delta, A, B_rows, C_rows, D, z, delta_bias, delta_softplus,
                                            checkpoints)
        return out.to(u.dtype), checkpoints
    kernels = numba_kernels()
    cast = [_numpy(x.to(state_dtype)) for x in (u, delta, A.contiguous(), B_rows, C_rows)]
    optional = [_numpy_or_empty(x, checkpoints, dims) for x, dims in ((D, 1), (z, 3), (delta_bias, 1))]
    out = u.new_empty(batch, d_inner, length, dtype=state_dtype)
    kernels.scan_forward(*cast, *optional, delta_softplus, D is not None, z is not None, delta_bias is not None,
                         False, False, out.numpy(), checkpoints.numpy())
    return out.to(u.dtype), checkpoints


def _selective_scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    batch, d_inner, length = u.shape
    checkpoints = u.new_empty(batch, d_inner, _checkpoint_count(length), A.shape[1], dtype=_state_dtype(u))
    return torch.empty_like(u, memory_format=torch.contiguous_format), checkpoints


def _selective_scan_bwd(
    grad_out: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    checkpoints: torch.Tensor,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor]:
    """Gradients for (u, delta, A, B, C, D, z, delta_bias), each in its input's shape and dtype; an absent
    optional input gets an empty tensor."""
    batch, d_inner, length = u.shape
    n_state = A.shape[1]
    B_rows, C_rows = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (batch, L, N)
    if not custom_ops.uses_numba(u):
        grads = triton_kernels().scan_backward(grad_out, u, delta, A, B_rows, C_rows, D, z, delta_bias,
                                               checkpoints, delta_softplus)
    else:
        kernels = numba_kernels()
        dtype = checkpoints.dtype
        groups = kernels.gradient_groups(batch, d_inner)
        new = functools.partial(torch.empty, dtype=dtype)
        grads = (new(batch, d_inner, length), new(batch, d_inner, length),
                 torch.zeros(batch, d_inner, length, dtype=dtype) if z is not None else new(0, 0, 0),
                 new(batch, d_inner, n_state), new(batch, d_inner), new(batch, d_inner),
                 torch.empty(batch, groups, length, n_state, dtype=dtype),
                 torch.empty(batch, groups, length, n_state, dtype=dtype))
        inputs = [_numpy(x.to(dtype)) for x in (grad_out, u, delta, A.contiguous(), B_rows, C_rows)]
        optional = [_numpy_or_empty(x, checkpoints, dims) for x, dims in ((D, 1), (z, 3), (delta_bias, 1))]
        kernels.scan_backward(*inputs, *optional, checkpoints.numpy(), delta_softplus, D is not None,
                              z is not None, delta_bias is not None, False, False, *(g.numpy() for g in grads),
                              new(0, 0, 0).numpy())
    grad_u, grad_delta, grad_z, grad_A, grad_D, grad_bias, grad_B, grad_C = grads
    return (
        grad_u.to(u.dtype),
        grad_delta.to(delta.dtype),
        grad_A.sum(0).to(A.dtype),
        grad_B.sum(1).transpose(1, 2).to(B.dtype),  # (batch, N, L)
        grad_C.sum(1).transpose(1, 2).to(C.dtype),
        grad_D.sum(0).to(D.dtype) if D is not None else u.new_empty(0),  # outputs may not alias: one each
        grad_z.to(z.dtype) if z is not None else u.new_empty(0),
        grad_bias.sum(0).to(delta_bias.dtype) if delta_bias is not None else u.new_empty(0),
    )


def _selective_scan_bwd_fake(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus):
    def like_bnl(x):  # the (batch, N, L) view of (batch, L, N) memory the real kernel returns
        return x.new_empty(x.shape[0], x.shape[2], x.shape[1]).transpose(1, 2)

    return (
        torch.empty_like(u, memory_format=torch.contiguous_format),
        torch.empty_like(delta, memory_format=torch.contiguous_format),
        torch.empty_like(A, memory_format=torch.contiguous_format),
        like_bnl(B),
        like_bnl(C),
        torch.empty_like(D) if D is not None else u.new_empty(0),
        torch.empty_like(z, memory_format=torch.contiguous_format) if z is not None else u.new_empty(0),
        torch.empty_like(delta_bias) if delta_bias is not None else u.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    ctx.optional = (D is not None, z is not None, delta_bias is not None)
    ctx.delta_softplus = delta_softplus
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1])


def _backward(ctx, grad_out, _grad_checkpoints):
    u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
    grads = torch.ops.stretchysnake.selective_scan_bwd(
        grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, ctx.delta_softplus
    )
    grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_bias = grads
    has_D, has_z, has_bias = ctx.optional
    return (grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D if has_D else None, grad_z if has_z else None,
            grad_bias if has_bias else None, None)


register_differentiable_op("selective_scan", _selective_scan_fwd, _selective_scan_fwd_fake, _selective_scan_bwd,
                           _selective_scan_bwd_fake, _setup_context, _backward)


def selective_scan_fused(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The fused scan, differentiable. 16-bit inputs are computed with an fp32 state and returned in their dtype."""
    out_dtype = u.dtype
    dtype = compute_dtype(u)
    cast = [None if x is None else x.to(dtype) for x in (u, delta, A, B, C, D, z, delta_bias)]
    prepare_numba_kernels(u, A.shape[-1], (u, delta, A, B, C, D, z, delta_bias))
    out, _ = torch.ops.stretchysnake.selective_scan_fwd(*cast, delta_softplus)
    return out.to(out_dtype)


__all__ = ["compute_dtype", "selective_scan_fused", "numba_available", "triton_available", "CHECKPOINT_EVERY",
           "prepare_numba_kernels"]
