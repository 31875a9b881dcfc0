"""Pure resampling helpers that let base-size parameters serve any patch size, token grid and frame count.

Every function returns its input unchanged when the target size equals the stored size, and is
differentiable, so gradients of a resized weight flow back to the base weight.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def _interpolate_2d(images: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    # images: (N, C, H, W). Interpolation runs in float32 (bicubic has no half kernels on every device).
    resized = F.interpolate(images.float(), size=size, mode=mode, align_corners=False, antialias=antialias)
    return resized.to(images.dtype)


def resize_patch_kernel_bicubic(kernel: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """Resize a patch-embedding kernel (..., p, p) to (..., h, w) with bicubic + antialias, no rescaling."""
    if tuple(kernel.shape[-2:]) == tuple(new_size):
        return kernel
    leading = kernel.shape[:-2]
    flat = kernel.reshape(-1, 1, *kernel.shape[-2:])
    return _interpolate_2d(flat, tuple(new_size), "bicubic", antialias=True).reshape(*leading, *new_size)


@lru_cache(maxsize=32)
def _resize_matrix(old_size: tuple[int, int], new_size: tuple[int, int], mode: str) -> torch.Tensor:
    """The linear map (new_h*new_w, old_h*old_w) that `mode` interpolation applies to a flattened patch."""
    basis = torch.eye(old_size[0] * old_size[1], dtype=torch.float64).reshape(-1, 1, *old_size)
    resized = F.interpolate(basis, size=new_size, mode=mode, align_corners=False, antialias=False)
    return resized.reshape(old_size[0] * old_size[1], -1).T.contiguous()


@lru_cache(maxsize=32)
def _pi_resize_projection(old_size: tuple[int, int], new_size: tuple[int, int], mode: str) -> torch.Tensor:
    # FlexiViT: w_new = pinv(M^T) w_old, so that <resize(x), w_new> = <x, w_old> whenever M^T has full row rank.
    return torch.linalg.pinv(_resize_matrix(old_size, new_size, mode).T)  # (new_h*new_w, old_h*old_w)


def resize_patch_kernel_pi(kernel: torch.Tensor, new_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """FlexiViT's pseudo-inverse resize of a patch kernel (..., p, p) -> (..., h, w).

    Upsampling keeps every patch token exactly as it was for an input resized by the same interpolation.
    The projection is computed once per (old, new) size in float64 and cached.
    """
    old_size = tuple(kernel.shape[-2:])
    new_size = tuple(new_size)
    if old_size == new_size:
        return kernel
    projection = _pi_resize_projection(old_size, new_size, mode).to(device=kernel.device, dtype=torch.float32)
    flat = kernel.reshape(-1, old_size[0] * old_size[1]).float()
    resized = flat @ projection.T
    return resized.reshape(*kernel.shape[:-2], *new_size).to(kernel.dtype)


def resize_patch_kernel(kernel: torch.Tensor, new_size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize a patch kernel with the config's `kernel_resize_mode` (`"bicubic"` or `"pi"`)."""
    if mode == "bicubic":
        return resize_patch_kernel_bicubic(kernel, new_size)
    if mode == "pi":
        return resize_patch_kernel_pi(kernel, new_size)
    raise ValueError(f"Unknown kernel resize mode {mode!r}; expected 'bicubic' or 'pi'")


def resample_spatial_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Bicubic resample of patch position embeddings (1, old_h*old_w, D) -> (1, new_h*new_w, D).

    Non-square grids are allowed; the CLS slot is not part of the input.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = _interpolate_2d(grid, tuple(new_grid), "bicubic", antialias=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


def resample_temporal_pos_embed(pos_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linear resample of temporal position embeddings (1, T0, D) -> (1, T, D)."""
    if pos_embed.shape[1] == num_frames:
        return pos_embed
    resized = F.interpolate(pos_embed.float().transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
    return resized.transpose(1, 2).to(pos_embed.dtype)
