"""What the two fused ops (the selective scan, the bidirectional mixer) share: which kernels a tensor's device
gets, and registering a forward / backward pair as `torch.library` custom ops with autograd."""

from __future__ import annotations

import torch

NAMESPACE = "stretchysnake"


def uses_numba(tensor: torch.Tensor) -> bool:
    """numba's kernels for CPU tensors; Triton's otherwise. The tests and the GPU check swap this (on this module)
    to run the Triton path on CPU tensors under ``TRITON_INTERPRET=1``."""
    return tensor.device.type == "cpu"


def defined(name: str) -> bool:
    """Whether ``stretchysnake::name`` is registered already: the same code may be imported twice in one process
    (the package and a trust_remote_code copy); the ops are registered once and shared, they compute the same
    function."""
    return hasattr(getattr(torch.ops, NAMESPACE), name)


def register_differentiable_op(name: str, forward, forward_fake, backward, backward_fake, setup_context,
                               backward_formula) -> None:
    """``stretchysnake::{name}_fwd`` and ``_bwd`` from their implementations (their annotated signatures are the
    schemas), with fake implementations for shapes, and the forward's autograd through the backward op
    (`setup_context` saves what `backward_formula` reads). Does nothing if they are registered."""
    if defined(f"{name}_fwd"):
        return
    ops = {}
    for suffix, implementation, fake in (("fwd", forward, forward_fake), ("bwd", backward, backward_fake)):
        ops[suffix] = torch.library.custom_op(f"{NAMESPACE}::{name}_{suffix}", implementation, mutates_args=(),
                                              device_types=("cpu", "cuda"))
        ops[suffix].register_fake(fake)
    ops["fwd"].register_autograd(backward_formula, setup_context=setup_context)
