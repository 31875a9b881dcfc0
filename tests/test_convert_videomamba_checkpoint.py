import io
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForVideoClassification

from conftest import script_env
from modeling_stretchysnake.convert_videomamba_checkpoint import (
    ConversionError,
    NotACheckpointError,
    convert_checkpoint,
    load_official_state_dict,
)
from modeling_stretchysnake.pretrained import convert_main


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


def test_a_tubelet_checkpoint_is_refused_in_one_line(tmp_path):
    """VideoMamba's code can train with kernel_size=2 (a (D, 3, 2, 16, 16) patch kernel spanning two frames): one
    line saying what the file holds and what the model supports, not torch's size-mismatch report."""
    tubelet = official_tiny_state_dict(depth=2, dim=32)
    tubelet["patch_embed.proj.weight"] = torch.zeros(32, 3, 2, 16, 16)
    torch.save(tubelet, tmp_path / "tubelet.pth")
    with pytest.raises(ConversionError) as caught:
        convert_checkpoint(tmp_path / "tubelet.pth")
    message = str(caught.value)
    assert "\n" not in message and "tubelet.pth: its patch embedding spans 2 frames" in message, message
    assert "(32, 3, 2, 16, 16)" in message
    assert "kernel_size=1" in message and "size mismatch" not in message


def test_image_checkpoint_with_2d_kernel_and_no_temporal_embedding(official, tmp_path):
    state = dict(official)
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :, 0]
    del state["temporal_pos_embedding"]
    torch.save(state, tmp_path / "in1k.pth")
    model = convert_checkpoint(tmp_path / "in1k.pth")
    torch.testing.assert_close(model.stretchysnake.embeddings.patch_embeddings.weight[:, :, 0], state["patch_embed.proj.weight"])


def test_training_states_with_their_options_and_numpy_scalars_load(official, tmp_path):
    """What VideoMamba's save_model writes (model, optimizer, epoch, scaler, argparse options), with numpy scalars
    as numpy 2 and numpy 1.x name their reconstructor."""
    import argparse

    state = {"model": official, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": np.int64(29),
             "scaler": {"scale": 65536.0}, "args": argparse.Namespace(lr=1e-4, model="videomamba_tiny"),
             "max_accuracy": np.float64(84.3), "dtype": np.dtype("float32")}
    torch.save(state, tmp_path / "state.pth")
    assert load_official_state_dict(tmp_path / "state.pth").keys() == official.keys()
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)  # a plain pickle stream: names can be edited
    legacy = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\nscalar" in legacy
    (tmp_path / "numpy1.pth").write_bytes(legacy)
    loaded = load_official_state_dict(tmp_path / "numpy1.pth")
    assert all(torch.equal(loaded[key], value) for key, value in official.items())


def test_other_objects_are_refused_by_name(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "path": pathlib.PurePosixPath("/data")}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="evil.pth holds pathlib.PurePosixPath, which a safe load") as caught:
        load_official_state_dict(tmp_path / "evil.pth")
    assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)
    torch.save({"model": {"x": object()}}, tmp_path / "object.pth")
    with pytest.raises(ConversionError, match="holds builtins.object"):
        load_official_state_dict(tmp_path / "object.pth")


class _Runs:
    """Pickles as a call of `function` on `arguments` (what a malicious checkpoint does through __reduce__)."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def malicious_checkpoints(folder):
    """Checkpoints whose pickle calls os.system, subprocess.Popen or eval, each of which would create a marker file
    in `folder`: {file name: what the message must name}."""
    import builtins
    import os
    import subprocess

    marker = folder / "it ran"
    calls = {"system.pth": (_Runs(os.system, f"touch '{marker}'"), "posix.system"),
             "popen.pth": (_Runs(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
             "eval.pth": (_Runs(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval")}
    for name, (call, _) in calls.items():
        torch.save({"model": {"x": torch.zeros(1)}, "epoch": call}, folder / name)
    return {name: named for name, (_, named) in calls.items()}


def test_a_file_that_calls_a_blocked_module_is_refused_by_name_and_nothing_runs(tmp_path):
    """torch words a global of a blocked module (os, subprocess) otherwise than one not allowlisted ("GLOBAL
    posix.system whose module posix is blocked"); both are the refused-global message, never 'not a checkpoint'."""
    for name, named in malicious_checkpoints(tmp_path).items():
        with pytest.raises(ConversionError, match="holds ") as caught:
            load_official_state_dict(tmp_path / name)
        message = str(caught.value)
        assert f"{name} holds " in message and named in message and "a safe load" in message, message
        assert not isinstance(caught.value, NotACheckpointError) and "\n" not in message
    assert not (tmp_path / "it ran").exists()


def test_files_that_are_no_checkpoint_say_so_in_one_line(tmp_path):
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "page.pth").write_text("<html><body>Not found</body></html>")
    for name in ("noise.pth", "page.pth"):
        with pytest.raises(NotACheckpointError, match=f"{name} is not a PyTorch checkpoint") as caught:
            load_official_state_dict(tmp_path / name)
        assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)
    with pytest.raises(ConversionError, match="absent.pth: no such file"):
        load_official_state_dict(tmp_path / "absent.pth")


def test_command_line(official, tmp_path, capsys):
    torch.save(official, tmp_path / "ckpt.pth")
    labels = tmp_path / "labels.json"
    labels.write_text('["a", "b", "c"]')
    convert_main([str(tmp_path / "ckpt.pth"), str(tmp_path / "out"), "--labels", str(labels)])
    assert "3 labels" in capsys.readouterr().out
    model = AutoModelForVideoClassification.from_pretrained(tmp_path / "out")
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    command = [sys.executable, "-m", "modeling_stretchysnake.convert_videomamba_checkpoint"]
    for not_a_checkpoint, message in ((labels, "labels.json is not a PyTorch checkpoint"),
                                      (tmp_path / "absent.pth", "absent.pth: no such file")):
        result = subprocess.run([*command, str(not_a_checkpoint), str(tmp_path / "out2")], env=script_env(),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and result.stderr.startswith("error: ") and message in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 2  # + the --debug hint
    assert not (tmp_path / "out2").exists()
