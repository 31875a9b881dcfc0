import pytest
import torch
from transformers import AutoModelForVideoClassification

from modeling_stretchysnake.convert_videomamba_checkpoint import (
    ConversionError,
    convert_checkpoint,
    load_official_state_dict,
    main,
)


def official_tiny_state_dict(num_frames=8, num_classes=400, depth=24, dim=192, n=16, seed=0):
    """Random tensors with the official VideoMamba-Ti key names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    d_inner, rank = 2 * dim, dim // 16

    def randn(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    state = {
        "patch_embed.proj.weight": randn(dim, 3, 1, 16, 16),
        "patch_embed.proj.bias": randn(dim),
        "cls_token": randn(1, 1, dim),
        "pos_embed": randn(1, 197, dim),
        "temporal_pos_embedding": randn(1, num_frames, dim),
        "norm_f.weight": 1 + randn(dim),
        "head.weight": randn(num_classes, dim),
        "head.bias": randn(num_classes),
    }
    for i in range(depth):
        prefix = f"layers.{i}."
        state[prefix + "norm.weight"] = 1 + randn(dim)
        mixer = prefix + "mixer."
        state[mixer + "in_proj.weight"] = randn(2 * d_inner, dim)
        state[mixer + "out_proj.weight"] = randn(dim, d_inner)
        for suffix in ("", "_b"):
            state[mixer + f"conv1d{suffix}.weight"] = randn(d_inner, 1, 4)
            state[mixer + f"conv1d{suffix}.bias"] = randn(d_inner)
            state[mixer + f"x_proj{suffix}.weight"] = randn(rank + 2 * n, d_inner)
            state[mixer + f"dt_proj{suffix}.weight"] = randn(d_inner, rank)
            state[mixer + f"dt_proj{suffix}.bias"] = randn(d_inner) - 4
            state[mixer + ("A_log" if suffix == "" else "A_b_log")] = torch.log(torch.arange(1, n + 1.0)).repeat(d_inner, 1)
            state[mixer + f"D{suffix}"] = 1 + randn(d_inner)
    return state


@pytest.fixture(scope="module")
def official():
    return official_tiny_state_dict()


def test_round_trip_to_a_loadable_folder(official, tmp_path):
    path = tmp_path / "videomamba_t16_k400_f8_res224.pth"
    torch.save({"model": official}, path)
    convert_checkpoint(path, tmp_path / "hf")
    model = AutoModelForVideoClassification.from_pretrained(tmp_path / "hf").eval()
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_frames, config.num_labels) == (192, 24, 8, 400)
    assert config.time_step_rank == 12 and config.image_size == 224
    converted = model.state_dict()
    torch.testing.assert_close(converted["classifier.weight"], official["head.weight"])
    torch.testing.assert_close(
        converted["stretchysnake.layers.23.mixer.A_b_log"], official["layers.23.mixer.A_b_log"]
    )
    torch.testing.assert_close(
        converted["stretchysnake.embeddings.position_embeddings"], official["pos_embed"]
    )
    assert model(torch.randn(1, 2, 3, 112, 112)).logits.shape == (1, 400)


@pytest.mark.parametrize("wrap", ["raw", "model", "module", "backbone_prefix", "encoder_prefix"])
def test_containers_and_prefixes(official, tmp_path, wrap):
    state = dict(official)
    if wrap == "model":
        state = {"model": state, "epoch": torch.tensor(3)}
    elif wrap == "module":
        state = {"module": state}
    elif wrap.endswith("_prefix"):
        prefix = wrap.split("_")[0] + "."
        state = {prefix + key: value for key, value in state.items()}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    loaded = load_official_state_dict(path)
    assert set(loaded) == set(official)


def test_masked_pretraining_file_uses_norm_and_drops_clip_decoder(official, tmp_path):
    state = {key: value for key, value in official.items() if not key.startswith("head.")}
    state["norm.weight"] = state.pop("norm_f.weight")
    state["clip_decoder.0.head.weight"] = torch.randn(4, 4)
    path = tmp_path / "pretrain.pth"
    torch.save(state, path)
    model = convert_checkpoint(path, num_labels=10)
    torch.testing.assert_close(model.stretchysnake.norm_f.weight, state["norm.weight"])
    assert model.config.num_labels == 10


def test_missing_head_without_num_labels_fails(official, tmp_path):
    state = {key: value for key, value in official.items() if not key.startswith("head.")}
    torch.save(state, tmp_path / "nohead.pth")
    with pytest.raises(ConversionError, match="num_labels"):
        convert_checkpoint(tmp_path / "nohead.pth")


def test_unexpected_and_missing_keys_fail_loudly(official, tmp_path):
    extra = dict(official, **{"mask_token": torch.zeros(1, 1, 192)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ConversionError, match="mask_token"):
        convert_checkpoint(tmp_path / "extra.pth")
    missing = {key: value for key, value in official.items() if key != "layers.3.mixer.x_proj_b.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ConversionError, match="layers.3.mixer.x_proj_b.weight"):
        convert_checkpoint(tmp_path / "missing.pth")


def test_shape_mismatch_fails(official, tmp_path):
    bad = dict(official)
    bad["layers.0.mixer.D_b"] = torch.ones(7)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ConversionError, match="D_b"):
        convert_checkpoint(tmp_path / "bad.pth")


def test_image_checkpoint_with_2d_kernel_and_no_temporal_embedding(official, tmp_path):
    state = dict(official)
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :, 0]
    del state["temporal_pos_embedding"]
    torch.save(state, tmp_path / "in1k.pth")
    model = convert_checkpoint(tmp_path / "in1k.pth")
    torch.testing.assert_close(model.stretchysnake.embeddings.patch_embeddings.weight[:, :, 0], state["patch_embed.proj.weight"])


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": {"x": object()}}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="cannot read"):
        load_official_state_dict(tmp_path / "evil.pth")


def test_command_line(official, tmp_path, capsys):
    torch.save(official, tmp_path / "ckpt.pth")
    labels = tmp_path / "labels.json"
    labels.write_text('["a", "b", "c"]')
    main([str(tmp_path / "ckpt.pth"), str(tmp_path / "out"), "--labels", str(labels)])
    assert "3 labels" in capsys.readouterr().out
    model = AutoModelForVideoClassification.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    for not_a_checkpoint in (labels, tmp_path / "absent.pth"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(not_a_checkpoint), str(tmp_path / "out2")])
        assert exit_info.value.code == 1
    assert "conversion failed" in capsys.readouterr().err
