import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import small_config

from modeling_stretchysnake import (
    STRETCHYSNAKE_PRESETS,
    StretchySnakeConfig,
    StretchySnakeForVideoClassification,
    StretchySnakeModel,
)
from modeling_stretchysnake.modeling_stretchysnake import StretchySnakeMixer, resolve_patch_size


@pytest.mark.parametrize(
    "frames,height,width,grid",
    [
        (1, 32, 32, (4, 4)),  # a single image
        (4, 32, 32, (4, 4)),  # base scale
        (7, 16, 16, (4, 4)),  # fewer pixels, more frames than stored
        (3, 16, 24, (4, 6)),  # non-square: patch from the shorter side
        (2, 48, 32, (6, 4)),
        (5, 64, 64, (4, 4)),
    ],
)
def test_any_scale_forward(model, frames, height, width, grid):
    pixel_values = torch.randn(2, frames, 3, height, width)
    outputs = model.stretchysnake(pixel_values)
    assert outputs.last_hidden_state.shape == (2, 1 + frames * grid[0] * grid[1], 32)
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state[:, 0])
    logits = model(pixel_values).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_static_patches_mode_grows_the_grid():
    model = StretchySnakeModel(small_config(scale_mode="static_patches")).eval()
    outputs = model(torch.randn(1, 2, 3, 48, 64))
    assert outputs.last_hidden_state.shape[1] == 1 + 2 * 6 * 8


def test_explicit_patch_size_overrides_scale_mode(model):
    outputs = model.stretchysnake(torch.randn(1, 2, 3, 32, 32), patch_size=16)
    assert outputs.last_hidden_state.shape[1] == 1 + 2 * 2 * 2


def test_base_scale_embeddings_use_stored_parameters_unchanged(model):
    embeddings = model.stretchysnake.embeddings
    pixel_values = torch.randn(2, 4, 3, 32, 32)
    tokens = embeddings(pixel_values, patch_size=8)
    stored = embeddings.patch_embeddings  # the stored kernel, applied by torch's own conv
    conv = F.conv3d(pixel_values.transpose(1, 2), stored.weight, stored.bias, stride=stored.stride)
    expected = conv.flatten(3).permute(0, 2, 3, 1)
    expected = expected + embeddings.position_embeddings[:, None, 1:] + embeddings.temporal_position_embeddings[:, :, None]
    torch.testing.assert_close(tokens[:, 1:], expected.flatten(1, 2))
    torch.testing.assert_close(tokens[:, 0], (embeddings.cls_token + embeddings.position_embeddings[:, :1])[:, 0].expand(2, -1))


def test_batch_items_are_independent(model):
    pixel_values = torch.randn(3, 2, 3, 16, 16)
    together = model(pixel_values).logits
    alone = torch.cat([model(pixel_values[i : i + 1]).logits for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_gradients_reach_base_weights_at_other_scales(model):
    model.train()
    model(torch.randn(1, 6, 3, 24, 24), labels=torch.tensor([1])).loss.backward()
    embeddings = model.stretchysnake.embeddings
    for parameter in (
        embeddings.patch_embeddings.weight,
        embeddings.position_embeddings,
        embeddings.temporal_position_embeddings,
        model.stretchysnake.layers[0].mixer.A_b_log,
        model.stretchysnake.layers[0].mixer.dt_proj_b.bias,
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert embeddings.patch_embeddings.weight.shape[-1] == 8  # stays at base size


@pytest.mark.parametrize("backend", ["numba", "chunked"])
def test_scan_backends_agree_through_the_model(model, backend):
    pixel_values = torch.randn(2, 3, 3, 16, 24)
    labels = torch.tensor([0, 2])
    results = []
    for name in ("reference", backend):
        candidate = copy.deepcopy(model)
        candidate.config.scan_backend = name
        candidate.zero_grad()
        output = candidate(pixel_values, labels=labels)
        output.loss.backward()
        results.append((output.logits.detach(), {k: p.grad for k, p in candidate.named_parameters()}))
    (expected, expected_grads), (actual, grads) = results
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_backward_branch_is_used():
    torch.manual_seed(0)
    mixer = StretchySnakeMixer(small_config())
    hidden = torch.randn(2, 9, 32)
    before = mixer(hidden)
    with torch.no_grad():
        mixer.x_proj_b.weight.mul_(2.0)
    assert not torch.allclose(mixer(hidden), before)
    with torch.no_grad():
        mixer.x_proj_b.weight.div_(2.0)
        mixer.A_b_log.add_(1.0)
    assert not torch.allclose(mixer(hidden), before)


def test_backward_branch_scans_the_flipped_sequence():
    # Swapping the forward and backward parameters must equal running on the reversed sequence.
    torch.manual_seed(0)
    mixer = StretchySnakeMixer(small_config())
    swapped = copy.deepcopy(mixer)
    with torch.no_grad():
        for forward_name, backward_name in (
            ("conv1d.weight", "conv1d_b.weight"),
            ("conv1d.bias", "conv1d_b.bias"),
            ("x_proj.weight", "x_proj_b.weight"),
            ("dt_proj.weight", "dt_proj_b.weight"),
            ("dt_proj.bias", "dt_proj_b.bias"),
            ("A_log", "A_b_log"),
            ("D", "D_b"),
        ):
            forward, backward = swapped.get_parameter(forward_name), swapped.get_parameter(backward_name)
            saved = forward.clone()
            forward.copy_(backward)
            backward.copy_(saved)
    hidden = torch.randn(2, 11, 32)
    torch.testing.assert_close(swapped(hidden.flip(1)).flip(1), mixer(hidden), rtol=1e-5, atol=1e-6)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(drop_path_rate=0.5))
    pixel_values = torch.randn(4, 2, 3, 16, 16)
    model.eval()
    torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits)
    model.train()
    assert not torch.allclose(model(pixel_values).logits, model(pixel_values).logits)


@pytest.mark.parametrize(
    "shape,error,match",
    [
        ((2, 3, 16, 16), ValueError, "batch, frames, channels, height, width"),
        ((1, 2, 1, 16, 16), ValueError, "channels"),
        ((1, 2, 16, 16, 3), ValueError, "channels"),
        ((1, 0, 3, 16, 16), ValueError, "empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, shape, error, match):
    with pytest.raises(error, match=match):
        model(torch.randn(*shape))


def test_bad_patch_size_and_input_types_raise(model):
    with pytest.raises(ValueError, match="positive integer"):
        model(torch.randn(1, 2, 3, 16, 16), patch_size=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[1.0]])
    with pytest.raises(TypeError, match="through StretchySnakeVideoProcessor"):
        model(torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8))


def test_indivisible_sides_are_zero_padded_bottom_right(model):
    pixel_values = torch.randn(1, 2, 3, 13, 22)
    padded = torch.nn.functional.pad(pixel_values, (0, 2, 0, 3))  # to 16 x 24
    torch.testing.assert_close(model(pixel_values, patch_size=8).logits, model(padded, patch_size=8).logits)
    # static tokens: patch = ceil(shorter side / base grid 4) = 4, grid ceil(13/4) x ceil(22/4) = 4 x 6
    hidden = model.stretchysnake(pixel_values).last_hidden_state
    assert hidden.shape[1] == 1 + 2 * 4 * 6


def test_resolve_patch_size_static_tokens_uses_shorter_side():
    config = StretchySnakeConfig()  # 224 px, patch 16: base grid 14
    assert [resolve_patch_size(config, r, r) for r in (98, 126, 224, 392)] == [7, 9, 16, 28]
    assert resolve_patch_size(config, 112, 168) == 8
    # shorter sides that are not a multiple of 14 round the patch up (the grid stays <= 14 along them)
    assert [resolve_patch_size(config, h, w) for h, w in ((1, 1), (7, 9), (97, 131), (240, 320))] == [1, 1, 7, 18]


@pytest.mark.parametrize("height,width", [(1, 1), (7, 9), (97, 131), (240, 320), (1080, 1920)])
def test_any_frame_size_runs_with_the_default_scale_mode(height, width):
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(image_size=224, patch_size=16)).eval()
    with torch.inference_mode():
        logits = model(torch.randn(1, 1, 3, height, width)).logits
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


def test_initialisation_follows_videomamba_and_mamba():
    torch.manual_seed(0)
    config = small_config(num_hidden_layers=4)
    model = StretchySnakeForVideoClassification(config)
    embeddings = model.stretchysnake.embeddings
    assert embeddings.cls_token.abs().sum() == 0 and embeddings.temporal_position_embeddings.abs().sum() == 0
    assert 0.01 < embeddings.position_embeddings.std() < 0.03
    mixer = model.stretchysnake.layers[0].mixer
    expected_a = torch.log(torch.arange(1, config.state_size + 1).float()).expand_as(mixer.A_log)
    torch.testing.assert_close(mixer.A_log, expected_a)
    torch.testing.assert_close(mixer.A_b_log, expected_a)
    assert (mixer.D == 1).all() and (mixer.D_b == 1).all()
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= config.time_step_min * 0.999 and dt.max() <= config.time_step_max * 1.001
    bound = (6 / ((1 + 5) * config.intermediate_size)) ** 0.5 / config.num_hidden_layers**0.5
    assert mixer.out_proj.weight.abs().max() <= bound
    assert 0.015 < mixer.in_proj.weight.std() < 0.025


@pytest.mark.parametrize("name,expected_millions", [("tiny", 7.0), ("small", 25.6), ("middle", 73.9)])
def test_preset_sizes_match_videomamba(name, expected_millions):
    config = StretchySnakeConfig.from_preset(name, num_labels=1000)
    assert (config.hidden_size, config.num_hidden_layers) == tuple(STRETCHYSNAKE_PRESETS[name].values())
    with torch.device("meta"):
        model = StretchySnakeForVideoClassification(config)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - expected_millions) / expected_millions < 0.03


def test_config_validates_choices():
    with pytest.raises(ValueError, match="kernel_resize_mode"):
        StretchySnakeConfig(kernel_resize_mode="nearest")
    with pytest.raises(ValueError, match="scale_mode"):
        StretchySnakeConfig(scale_mode="flexivit")
    with pytest.raises(ValueError, match="preset"):
        StretchySnakeConfig.from_preset("huge")
    assert StretchySnakeConfig(hidden_size=576).time_step_rank == 36


def test_pi_kernel_mode_runs(model):
    model.config.kernel_resize_mode = "pi"
    assert torch.isfinite(model(torch.randn(1, 2, 3, 64, 64)).logits).all()


def test_mean_pooling_reads_the_mean_of_the_patch_tokens():
    torch.manual_seed(0)
    model = StretchySnakeModel(small_config(pooling="mean")).eval()
    outputs = model(torch.randn(2, 3, 3, 16, 16))
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state[:, 1:].mean(dim=1))
    cls_model = StretchySnakeModel(small_config()).eval()
    cls_model.load_state_dict(model.state_dict())  # same weights: only what is pooled differs
    cls_outputs = cls_model(torch.randn(2, 3, 3, 16, 16))
    torch.testing.assert_close(cls_outputs.pooler_output, cls_outputs.last_hidden_state[:, 0])
    with pytest.raises(ValueError, match="pooling"):
        small_config(pooling="max")


def test_sincos_position_embedding_init():
    from modeling_stretchysnake.modeling_stretchysnake import sincos_position_table

    torch.manual_seed(0)
    model = StretchySnakeModel(small_config(position_embedding_init="sincos"))
    spatial = model.embeddings.position_embeddings[0, 1:]
    table = sincos_position_table(4, 32)
    torch.testing.assert_close(spatial, table)
    # row-major: the row channels (first half) change along a column, the column channels along a row
    assert torch.equal(table[0, :16], table[1, :16]) and not torch.equal(table[0, 16:], table[1, 16:])
    assert not torch.equal(table[0, :16], table[4, :16])
    assert spatial.requires_grad and table.abs().max() == 1
    default = StretchySnakeModel(small_config())
    assert default.embeddings.position_embeddings.std() < 0.05  # VideoMamba's trunc-normal(0.02) stays the default
    with pytest.raises(ValueError, match="position_embedding_init"):
        small_config(position_embedding_init="zeros")


def test_projection_init_kaiming_uniform_is_mambas_default_linear_init():
    torch.manual_seed(0)
    mixer = StretchySnakeModel(small_config(hidden_size=96, projection_init="kaiming_uniform")).layers[0].mixer
    for linear in (mixer.in_proj, mixer.x_proj, mixer.x_proj_b):
        bound = linear.in_features**-0.5  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > 0.9 * bound
    default = StretchySnakeModel(small_config(hidden_size=96)).layers[0].mixer
    assert abs(default.in_proj.weight.std() - 0.02) < 0.002  # VideoMamba's trunc-normal(0.02) stays the default
    with pytest.raises(ValueError, match="projection_init"):
        small_config(projection_init="zeros")


def test_cls_at_both_ends_shares_the_token_and_averages_both_outputs():
    torch.manual_seed(0)
    model = StretchySnakeModel(small_config(cls_position="ends")).eval()
    pixel_values = torch.randn(2, 3, 3, 16, 16)
    outputs = model(pixel_values)
    hidden = outputs.last_hidden_state
    assert hidden.shape == (2, 2 + 3 * 16, 32)
    torch.testing.assert_close(outputs.pooler_output, (hidden[:, 0] + hidden[:, -1]) / 2)
    embedded = model.embeddings(pixel_values, 4)
    torch.testing.assert_close(embedded[:, 0], embedded[:, -1])  # the same token, the same parameters
    start = StretchySnakeModel(small_config())
    assert set(dict(start.named_parameters())) == set(dict(model.named_parameters()))  # checkpoints fit both
    # the trailing token reads the forward scan: the last frame reaches the output at init, unlike with one CLS
    grads = []
    for candidate in (start.eval(), model):
        frames = pixel_values.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(candidate(frames).pooler_output.pow(2).sum(), frames)
        per_frame = grad.abs().sum(dim=(0, 2, 3, 4))
        grads.append((per_frame[-1] / per_frame[0]).item())
    assert grads[0] < 0.01 < 0.3 < grads[1], grads
    mean = StretchySnakeModel(small_config(cls_position="ends", pooling="mean")).eval()
    hidden = mean(pixel_values).last_hidden_state
    torch.testing.assert_close(mean(pixel_values).pooler_output, hidden[:, 1:-1].mean(dim=1))
    with pytest.raises(ValueError, match="cls_position"):
        small_config(cls_position="middle")
