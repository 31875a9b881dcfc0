"""The whole bidirectional Mamba mixer between in_proj and the residual as one differentiable op.

Per direction (the backward one scans from the last token to the first inside the kernel: no flipped copies):

    x, z   = xz split in two                              (batch, L, d_inner) each: in_proj's output
    xc     = silu(depthwise conv(x) + conv_bias)          causal for the forward direction, anti-causal backward
    dt, B, C = split(x_proj(xc))                          (batch, L, rank), (batch, L, N), (batch, L, N)
    y      = selective_scan(xc, dt_proj(dt), A, B, C, D, z, dt_proj.bias, softplus)
    out    = out_proj(y_forward + y_backward)             (or y_forward + y_backward when out_proj is not fused)

Autograd keeps only xz, the (small) weights and the scans' state checkpoints (one N-state per channel every
``CHECKPOINT_EVERY`` steps, per direction). Backward recomputes the conv output, x_proj's output, the time steps and
the gated outputs (for out_proj's weight gradient) from xz, as mamba-ssm's fused inner function does with
``checkpoint_lvl=1`` (which also recomputes the gated output, but keeps x_proj's output and the ungated scan output).
The conv runs once in backward: its recomputation keeps the pre-activations for the conv's own gradient.

``stretchysnake::bidirectional_mixer_fwd`` / ``_bwd`` are ``torch.library`` custom ops (fake implementations for
shapes, ``register_autograd`` for gradients), so ``torch.compile`` and ``torch.export`` see one opaque op. Kernels:
numba on CPU (conv + SiLU of both directions in one pass, the scans with their D skip and SiLU(z) gate), Triton on
CUDA for the scans with the conv in PyTorch. On CUDA with mamba-ssm importable, ``bidirectional_mixer_mamba_ssm``
runs mamba-ssm's own ``mamba_inner_fn`` per direction instead, as the official VideoMamba does.

Parameters of the two directions are stacked on a leading axis of 2 (forward, backward):
conv_weight (2, d_inner, K), conv_bias (2, d_inner), x_proj_weight (2, rank + 2N, d_inner), dt_proj_weight
(2, d_inner, rank), dt_proj_bias (2, d_inner), A (2, d_inner, N) (negative: -exp(A_log)), D (2, d_inner).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import custom_ops
from .custom_ops import register_differentiable_op
from .selective_scan_fused import (
    CHECKPOINT_EVERY,
    compute_dtype,
    numba_kernels,
    prepare_numba_kernels,
    triton_kernels,
)


def _chunks(length: int) -> int:
    return -(-length // CHECKPOINT_EVERY)


# ----- kernels per device: conv + SiLU of both directions, and one direction's scan -----


def _conv_silu(x, conv_weight, conv_bias, keep_pre_activations=False):
    """x (batch, d_inner, L), any strides -> (xc_forward, xc_backward), each (batch, d_inner, L) contiguous, and
    what ``_conv_silu_backward`` needs from this call (the numba kernel's pre-activations when asked to keep them)."""
    if custom_ops.uses_numba(x):
        kernels = numba_kernels()
        out = torch.empty(2, *x.shape, dtype=x.dtype)
        pre = torch.empty(2, *x.shape, dtype=x.dtype) if keep_pre_activations else x.new_empty(2, 0, 0, 0)
        kernels.conv_silu_forward(x.numpy(), conv_weight[0].numpy(), conv_bias[0].numpy(), conv_weight[1].numpy(),
                                  conv_bias[1].numpy(), out[0].numpy(), out[1].numpy(), pre[0].numpy(),
                                  pre[1].numpy())
        return out[0], out[1], pre
    return *(F.silu(pre) for pre in _conv_torch(x, conv_weight, conv_bias)), None


def _conv_torch(x, conv_weight, conv_bias):
    # The anti-causal conv is the causal one with the taps reversed, read K - 1 positions later.
    width, length = conv_weight.shape[-1], x.shape[-1]
    forward = F.conv1d(x, conv_weight[0].unsqueeze(1), conv_bias[0], padding=width - 1, groups=x.shape[1])
    backward = F.conv1d(x, conv_weight[1].flip(-1).unsqueeze(1), conv_bias[1], padding=width - 1, groups=x.shape[1])
    return forward[..., :length], backward[..., width - 1:]


def _conv_silu_backward(x, conv_weight, conv_bias, pre_activations, grad_forward, grad_backward, grad_x):
    """Writes grad_x (batch, d_inner, L, any strides); returns the gradients of conv_weight and conv_bias.
    pre_activations: what ``_conv_silu(..., keep_pre_activations=True)`` returned with the outputs (the numba
    kernel's, so the conv is computed once in backward; the PyTorch path recomputes them)."""
    if custom_ops.uses_numba(x):
        kernels = numba_kernels()
        batch, d_inner, _ = x.shape
        grad_weight = torch.empty(2, batch, d_inner, conv_weight.shape[-1], dtype=x.dtype)
        grad_bias = torch.empty(2, batch, d_inner, dtype=x.dtype)
        kernels.conv_silu_backward(x.numpy(), conv_weight[0].numpy(), conv_weight[1].numpy(),
                                   pre_activations[0].numpy(), pre_activations[1].numpy(), grad_forward.numpy(),
                                   grad_backward.numpy(), grad_x.numpy(), grad_weight[0].numpy(),
                                   grad_bias[0].numpy(), grad_weight[1].numpy(), grad_bias[1].numpy())
        return grad_weight.sum(1), grad_bias.sum(1)
    width = conv_weight.shape[-1]
    grad_pre = []
    for grad, pre in zip((grad_forward, grad_backward), _conv_torch(x, conv_weight, conv_bias)):
        sigmoid = torch.sigmoid(pre)
        grad_pre.append(grad * sigmoid * (1 + pre * (1 - sigmoid)))
    # the full-length (L + K - 1) outputs' gradients: zero where the causal / anti-causal slice dropped them
    full = (F.pad(grad_pre[0], (0, width - 1)), F.pad(grad_pre[1], (width - 1, 0)))
    weights = (conv_weight[0].unsqueeze(1), conv_weight[1].flip(-1).unsqueeze(1))
    options = dict(padding=width - 1, groups=x.shape[1])
    grad_x.copy_(sum(torch.nn.grad.conv1d_input(x.shape, w, g, **options) for w, g in zip(weights, full)))
    grad_weight = [torch.nn.grad.conv1d_weight(x, w.shape, g, **options).squeeze(1) for w, g in zip(weights, full)]
    grad_weight[1] = grad_weight[1].flip(-1)
    return torch.stack(grad_weight), torch.stack([g.sum((0, 2)) for g in grad_pre])


def _scan_forward(u, delta, A, B_rows, C_rows, D, z, delta_bias, reverse, out, accumulate):
    """One direction's scan: u, delta, z (batch, d_inner, L); B_rows, C_rows (batch, L, N) contiguous; writes (or
    adds to) out (batch, d_inner, L, any strides). Returns the state checkpoints (batch, d_inner, chunks, N)."""
    batch, d_inner, length = u.shape
    checkpoints = u.new_empty(batch, d_inner, _chunks(length), A.shape[1])
    if custom_ops.uses_numba(u):
        numba_kernels().scan_forward(u.numpy(), delta.numpy(), A.numpy(), B_rows.numpy(), C_rows.numpy(), D.numpy(),
                                     z.numpy(), delta_bias.numpy(), True, True, True, True, reverse, accumulate,
                                     out.numpy(), checkpoints.numpy())
    else:
        triton_kernels().scan_forward(u, delta, A, B_rows, C_rows, D, z, delta_bias, True, checkpoints,
                                      reverse=reverse, out=out, accumulate=accumulate)
    return checkpoints


def _scan_backward(grad_y, u, delta, A, B_rows, C_rows, D, z, delta_bias, checkpoints, reverse, grad_z, y_out):
    """Gradients of ``_scan_forward``: returns grad_u, grad_delta (batch, d_inner, L), grad_A (d_inner, N),
    grad_D, grad_bias (d_inner,), grad_B, grad_C (batch, L, N); adds to grad_z, and (if given) adds the recomputed
    gated output to y_out, both (batch, d_inner, L, any strides)."""
    batch, d_inner, length = u.shape
    n_state = A.shape[1]
    if custom_ops.uses_numba(u):
        groups = numba_kernels().gradient_groups(batch, d_inner)
        new = functools.partial(torch.empty, dtype=u.dtype)
        grads = (new(batch, d_inner, length), new(batch, d_inner, length), grad_z, new(batch, d_inner, n_state),
                 new(batch, d_inner), new(batch, d_inner), torch.empty(batch, groups, length, n_state, dtype=u.dtype),
                 torch.empty(batch, groups, length, n_state, dtype=u.dtype))
        has_y = y_out is not None
        numba_kernels().scan_backward(
            grad_y.numpy(), u.numpy(), delta.numpy(), A.numpy(), B_rows.numpy(), C_rows.numpy(), D.numpy(),
            z.numpy(), delta_bias.numpy(), checkpoints.numpy(), True, True, True, True, reverse, has_y,
            *(g.numpy() for g in grads), (y_out if has_y else new(0, 0, 0)).numpy())
        grad_u, grad_delta, _, grad_A, grad_D, grad_bias, grad_B, grad_C = grads
    else:
        grad_u, grad_delta, _, grad_A, grad_D, grad_bias, grad_B, grad_C = triton_kernels().scan_backward(
            grad_y, u, delta, A, B_rows, C_rows, D, z, delta_bias, checkpoints, True, reverse=reverse,
            grad_z=grad_z, y_out=y_out)
    return grad_u, grad_delta, grad_A.sum(0), grad_D.sum(0), grad_bias.sum(0), grad_B.sum(1), grad_C.sum(1)


# ----- the projections around the scans (shared by forward and backward) -----


def _direction_inputs(xc, x_proj_weight, dt_proj_weight, rank, n_state):
    """xc (batch, d_inner, L) -> x_proj output pieces dt (batch, rank, L), B and C rows (batch, L, N), and
    delta = dt_proj(dt) without its bias (batch, d_inner, L)."""
    x_dbl = _weight_times(x_proj_weight, xc)  # (batch, rank + 2N, L)
    dt = x_dbl[:, :rank]
    B_rows = x_dbl[:, rank:rank + n_state].transpose(1, 2).contiguous()
    C_rows = x_dbl[:, rank + n_state:].transpose(1, 2).contiguous()
    return dt, B_rows, C_rows, _weight_times(dt_proj_weight, dt)


def _weight_times(weight, x):
    """weight (out, in) @ x (batch, in, L) -> (batch, out, L) as one batched GEMM on x's memory: torch.matmul would
    fold the batch into rows of x.mT first, a copy of all of x."""
    return torch.bmm(weight.expand(x.shape[0], *weight.shape), x)


def _weight_gradient(grad, x):
    """sum over the batch of grad (batch, out, L) @ x (batch, in, L).mT -> (out, in), without copying either."""
    return torch.bmm(grad, x.transpose(1, 2)).sum(0)


def _split(xz):
    # xz (batch, L, 2 * d_inner) -> x, z as (batch, d_inner, L) views
    d_inner = xz.shape[-1] // 2
    return xz[..., :d_inner].transpose(1, 2), xz[..., d_inner:].transpose(1, 2)


def _no_autocast(x):
    # The ops compute in their inputs' dtype (float32 or float64); an enclosing autocast must not turn their
    # matmuls into 16-bit ones.
    return torch.autocast(device_type=x.device.type, enabled=False)


def _output_width(xz, out_proj_weight):
    return out_proj_weight.shape[0] if out_proj_weight is not None else xz.shape[-1] // 2


def _bidirectional_mixer_fwd(
    xz: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_proj_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    out_proj_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the mixer output (batch, L, hidden or d_inner) and the state checkpoints of both directions
    (2, batch, d_inner, chunks, N)."""
    with _no_autocast(xz):
        return _forward(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                        out_proj_weight)


def _forward(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, out_proj_weight):
    batch, length, _ = xz.shape
    rank, n_state = dt_proj_weight.shape[2], A.shape[2]
    x, z = _split(xz.to(A.dtype))  # a 16-bit xz is kept as it is for backward and computed in float32
    y = A.new_empty(batch, length, xz.shape[-1] // 2)  # the sum of both directions, in (batch, L, d_inner)
    checkpoints = []
    for direction, xc in enumerate(_conv_silu(x, conv_weight, conv_bias)[:2]):
        dt, B_rows, C_rows, delta = _direction_inputs(xc, x_proj_weight[direction], dt_proj_weight[direction],
                                                      rank, n_state)
        checkpoints.append(_scan_forward(xc, delta, A[direction], B_rows, C_rows, D[direction], z,
                                         dt_proj_bias[direction], reverse=direction == 1, out=y.transpose(1, 2),
                                         accumulate=direction == 1))
    out = y if out_proj_weight is None else torch.matmul(y, out_proj_weight.t())
    return out.to(xz.dtype), torch.stack(checkpoints)


def _bidirectional_mixer_fwd_fake(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                                  out_proj_weight):
    batch, length, width = xz.shape
    out = xz.new_empty(batch, length, _output_width(xz, out_proj_weight))
    return out, A.new_empty(2, batch, width // 2, _chunks(length), A.shape[2])


def _bidirectional_mixer_bwd(
    grad_out: torch.Tensor,
    xz: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_proj_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    out_proj_weight: torch.Tensor | None,
    checkpoints: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """Gradients for (xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
    out_proj_weight), each in its input's shape; without out_proj_weight its gradient is an empty tensor."""
    with _no_autocast(xz):
        return _backward_impl(grad_out, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                              A, D, out_proj_weight, checkpoints)


def _backward_impl(grad_out, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                   out_proj_weight, checkpoints):
    batch, length, width = xz.shape
    rank, n_state = dt_proj_weight.shape[2], A.shape[2]
    grad_out = grad_out.to(A.dtype).contiguous()
    grad_y = grad_out if out_proj_weight is None else torch.matmul(grad_out, out_proj_weight)  # (batch, L, d)
    x, z = _split(xz.to(A.dtype))
    grad_xz = torch.empty_like(xz, dtype=A.dtype, memory_format=torch.contiguous_format)
    grad_x, grad_z = _split(grad_xz)
    grad_z.zero_()  # both directions add their part
    y = None if out_proj_weight is None else A.new_zeros(batch, length, width // 2)  # recomputed, for out_proj
    grads = {name: [] for name in ("x_proj", "dt_proj", "dt_bias", "A", "D")}
    grad_xc = []
    *xcs, pre_activations = _conv_silu(x, conv_weight, conv_bias, keep_pre_activations=True)
    for direction, xc in enumerate(xcs):
        dt, B_rows, C_rows, delta = _direction_inputs(xc, x_proj_weight[direction], dt_proj_weight[direction],
                                                      rank, n_state)
        grad_u, grad_delta, grad_A, grad_D, grad_bias, grad_B, grad_C = _scan_backward(
            grad_y.transpose(1, 2), xc, delta, A[direction], B_rows, C_rows, D[direction], z,
            dt_proj_bias[direction], checkpoints[direction], reverse=direction == 1, grad_z=grad_z,
            y_out=None if y is None else y.transpose(1, 2))
        grad_dt = _weight_times(dt_proj_weight[direction].t(), grad_delta)  # (batch, rank, L)
        grad_x_dbl = torch.cat([grad_dt, grad_B.transpose(1, 2), grad_C.transpose(1, 2)], dim=1)
        grads["dt_proj"].append(_weight_gradient(grad_delta, dt))
        grads["x_proj"].append(_weight_gradient(grad_x_dbl, xc))
        grad_u.baddbmm_(x_proj_weight[direction].t().expand(batch, -1, -1), grad_x_dbl)
        grad_xc.append(grad_u)
        for name, grad in (("dt_bias", grad_bias), ("A", grad_A), ("D", grad_D)):
            grads[name].append(grad)
        del dt, B_rows, C_rows, delta, grad_delta, grad_B, grad_C, grad_dt, grad_x_dbl  # before the next direction
    grad_conv_weight, grad_conv_bias = _conv_silu_backward(x, conv_weight, conv_bias, pre_activations, *grad_xc,
                                                           grad_x)
    if out_proj_weight is None:
        grad_out_proj = A.new_empty(0)
    else:
        grad_out_proj = grad_out.reshape(-1, grad_out.shape[-1]).t() @ y.reshape(-1, width // 2)
    stacked = [torch.stack(grads[name]) for name in ("x_proj", "dt_proj", "dt_bias", "A", "D")]
    return (grad_xz.to(xz.dtype), grad_conv_weight, grad_conv_bias, *stacked, grad_out_proj)


def _bidirectional_mixer_bwd_fake(grad_out, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                                  A, D, out_proj_weight, checkpoints):
    return (torch.empty_like(xz, memory_format=torch.contiguous_format), torch.empty_like(conv_weight),
            torch.empty_like(conv_bias), torch.empty_like(x_proj_weight), torch.empty_like(dt_proj_weight),
            torch.empty_like(dt_proj_bias), torch.empty_like(A), torch.empty_like(D),
            torch.empty_like(out_proj_weight) if out_proj_weight is not None else A.new_empty(0))


def _setup_context(ctx, inputs, output):
    ctx.has_out_proj = inputs[-1] is not None
    ctx.save_for_backward(*inputs, output[1])


def _backward(ctx, grad_out, _grad_checkpoints):
    *inputs, checkpoints = ctx.saved_tensors
    grads = torch.ops.stretchysnake.bidirectional_mixer_bwd(grad_out, *inputs, checkpoints)
    return (*grads[:-1], grads[-1] if ctx.has_out_proj else None)


register_differentiable_op("bidirectional_mixer", _bidirectional_mixer_fwd, _bidirectional_mixer_fwd_fake,
                           _bidirectional_mixer_bwd, _bidirectional_mixer_bwd_fake, _setup_context, _backward)


def bidirectional_mixer_fused(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                              out_proj_weight=None):
    """The fused mixer, differentiable (shapes in the module docstring). Computed in float32 (float64 for float64
    inputs); the output has xz's dtype. A 16-bit xz (in_proj under autocast) is kept in 16 bits for backward."""
    dtype = compute_dtype(xz)
    if xz.dtype not in (torch.bfloat16, torch.float16):
        xz = xz.to(dtype)
    args = [None if t is None else t.to(dtype).contiguous() for t in
            (conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, out_proj_weight)]
    prepare_numba_kernels(xz, A.shape[-1], (xz, *args))
    out, _ = torch.ops.stretchysnake.bidirectional_mixer_fwd(xz, *args)
    return out


def bidirectional_mixer_mamba_ssm(mamba_inner_fn, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight,
                                  dt_proj_bias, A, D, out_proj_weight=None):
    """The same function through mamba-ssm's fused ``mamba_inner_fn`` (conv, projections, scan, gate and out_proj
    in one autograd function; ``checkpoint_lvl=1``), once per direction on (batch, 2 * d_inner, L), the backward
    direction on the flipped sequence as in the official VideoMamba; out_proj is linear, so applying it per
    direction and summing equals applying it to the sum."""
    xz = xz.transpose(1, 2)  # (batch, 2 * d_inner, L)
    outputs = []
    for direction, sequence in enumerate((xz, xz.flip(-1))):
        out = mamba_inner_fn(sequence, conv_weight[direction].unsqueeze(1), conv_bias[direction],
                             x_proj_weight[direction], dt_proj_weight[direction], out_proj_weight, None, A[direction],
                             None, None, D[direction].to(compute_dtype(D)),
                             delta_bias=dt_proj_bias[direction].to(compute_dtype(D)), delta_softplus=True)
        outputs.append(out if direction == 0 else out.flip(1))
    return outputs[0] + outputs[1]


__all__ = ["bidirectional_mixer_fused", "bidirectional_mixer_mamba_ssm"]
