import pytest
import torch
import torch.nn.functional as F

from modeling_stretchysnake.resizing import (
    _resize_matrix,
    resample_spatial_pos_embed,
    resample_temporal_pos_embed,
    resize_patch_kernel,
    resize_patch_kernel_pi,
)


@pytest.mark.parametrize("mode", ["bicubic", "pi"])
def test_kernel_resize_is_identity_at_base_size(mode):
    kernel = torch.randn(8, 3, 1, 16, 16)
    assert resize_patch_kernel(kernel, (16, 16), mode) is kernel


def test_pos_embed_resamples_are_identity_at_base_size():
    spatial = torch.randn(1, 14 * 14, 8)
    temporal = torch.randn(1, 8, 8)
    assert resample_spatial_pos_embed(spatial, (14, 14), (14, 14)) is spatial
    assert resample_temporal_pos_embed(temporal, 8) is temporal


@pytest.mark.parametrize("new_size", [(7, 7), (9, 9), (28, 28), (20, 12)])
def test_bicubic_kernel_resize_shapes_and_smoothness(new_size):
    # A constant kernel stays (nearly) constant: bicubic + antialias does not rescale magnitudes.
    kernel = torch.full((4, 3, 1, 16, 16), 0.5)
    resized = resize_patch_kernel(kernel, new_size, "bicubic")
    assert resized.shape == (4, 3, 1, *new_size)
    torch.testing.assert_close(resized, torch.full_like(resized, 0.5), atol=1e-4, rtol=0)


@pytest.mark.parametrize("new_size", [(20, 20), (24, 24), (32, 32)])
def test_pi_resize_keeps_tokens_exact_when_upsampling(new_size):
    torch.manual_seed(0)
    kernel = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    patch = torch.randn(7, 3, 16, 16, dtype=torch.float64)
    resized_patch = F.interpolate(patch, size=new_size, mode="bilinear", align_corners=False)
    resized_kernel = resize_patch_kernel_pi(kernel.float(), new_size).double()
    tokens = torch.einsum("bchw,ochw->bo", patch, kernel)
    resized_tokens = torch.einsum("bchw,ochw->bo", resized_patch, resized_kernel)
    torch.testing.assert_close(resized_tokens, tokens, rtol=1e-4, atol=1e-4)


def test_resize_matrix_reproduces_interpolation():
    image = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    matrix = _resize_matrix((6, 6), (9, 9), "bilinear")
    expected = F.interpolate(image, size=(9, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close((matrix @ image.flatten()).reshape(1, 1, 9, 9), expected)


def test_bicubic_kernel_resize_differs_from_pi():
    kernel = torch.randn(4, 3, 1, 16, 16)
    assert not torch.allclose(resize_patch_kernel(kernel, (8, 8), "bicubic"), resize_patch_kernel(kernel, (8, 8), "pi"))


def test_unknown_resize_mode_raises():
    with pytest.raises(ValueError, match="kernel resize mode"):
        resize_patch_kernel(torch.randn(1, 1, 16, 16), (8, 8), "nearest")


def test_spatial_pos_embed_non_square_and_row_major():
    # Embedding value = row index: after resampling, rows stay monotone and columns constant.
    rows = torch.arange(14.0).repeat_interleave(14).reshape(1, 196, 1)
    resized = resample_spatial_pos_embed(rows, (14, 14), (7, 21)).reshape(7, 21)
    assert resized.shape == (7, 21)
    torch.testing.assert_close(resized, resized[:, :1].expand(7, 21))
    assert (resized[1:, 0] > resized[:-1, 0]).all()


def test_temporal_pos_embed_linear_interpolation():
    ramp = torch.arange(4.0).reshape(1, 4, 1)
    doubled = resample_temporal_pos_embed(ramp, 8).flatten()
    # align_corners=False: output frame i samples input position (i + 0.5) / 2 - 0.5, clamped.
    expected = ((torch.arange(8.0) + 0.5) / 2 - 0.5).clamp(0, 3)
    torch.testing.assert_close(doubled, expected)
    assert resample_temporal_pos_embed(ramp, 1).shape == (1, 1, 1)


def test_resizes_pass_gradients_to_base_parameters():
    kernel = torch.randn(4, 3, 1, 16, 16, requires_grad=True)
    spatial = torch.randn(1, 196, 4, requires_grad=True)
    temporal = torch.randn(1, 8, 4, requires_grad=True)
    total = (
        resize_patch_kernel(kernel, (7, 7), "bicubic").sum()
        + resize_patch_kernel(kernel, (28, 28), "pi").sum()
        + resample_spatial_pos_embed(spatial, (14, 14), (9, 5)).sum()
        + resample_temporal_pos_embed(temporal, 3).sum()
    )
    total.backward()
    for parameter in (kernel, spatial, temporal):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
