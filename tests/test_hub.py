import json
import os
import subprocess
import sys
import textwrap

import pytest

import torch
from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification, StretchySnakeModel


def test_auto_classes_are_registered(config):
    assert type(AutoConfig.for_model("stretchysnake")) is StretchySnakeConfig
    assert type(AutoModel.from_config(config)) is StretchySnakeModel
    assert type(AutoModelForVideoClassification.from_config(config)) is StretchySnakeForVideoClassification


def test_save_load_round_trip_gives_identical_logits(model, tmp_path):
    model.config.id2label = {0: "jump", 1: "run", 2: "wave"}
    model.config.label2id = {"jump": 0, "run": 1, "wave": 2}
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "modeling_stretchysnake.py", "configuration_stretchysnake.py"} <= files
    # relative imports travel with the code, the fused kernels' modules included
    assert {"resizing.py", "selective_scan.py", "selective_scan_fused.py", "selective_scan_numba.py", "numba_cache.py",
            "selective_scan_triton.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForVideoClassification"].endswith("StretchySnakeForVideoClassification")

    pixel_values = torch.randn(2, 3, 3, 16, 24)
    loaded = AutoModelForVideoClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.id2label[2] == "wave"
    torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(backbone(pixel_values).pooler_output, model.stretchysnake(pixel_values).pooler_output)


@pytest.mark.parametrize(
    "hidden,backend,tolerance",
    [(("modeling_stretchysnake",), "numba", 0.0), (("modeling_stretchysnake", "numba"), "chunked", 1e-5)],
    ids=["with-numba", "without-numba"],
)
def test_trust_remote_code_load_without_the_package(model, tmp_path, hidden, backend, tolerance):
    """The saved folder alone runs the model; its fused CPU kernel where numba is installed, chunked otherwise."""
    folder, inputs = tmp_path / "model", tmp_path / "inputs.pt"
    model.save_pretrained(folder)
    pixel_values = torch.randn(1, 5, 3, 24, 24)
    torch.save({"pixel_values": pixel_values, "logits": model(pixel_values).logits}, inputs)
    script = textwrap.dedent(
        f"""
        import sys, torch

        class HidePackage:  # the installed package (and here maybe numba) must play no part: make them unimportable
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {hidden!r}:
                    raise ImportError("hidden for this test")

        sys.meta_path.insert(0, HidePackage())
        try:
            import modeling_stretchysnake
            raise SystemExit("package is still importable")
        except ImportError:
            pass
        from transformers import AutoModelForVideoClassification
        model = AutoModelForVideoClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        data = torch.load({str(inputs)!r})
        torch.testing.assert_close(model(data["pixel_values"]).logits, data["logits"], rtol=0, atol={tolerance!r})
        scan = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".selective_scan"]
        assert scan.resolve_scan_backend("auto", torch.device("cpu")) == {backend!r}
        print("remote code ok")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code ok" in result.stdout
    # the remote copy of the kernels loads what the package compiled for the reference logits (one cache entry per
    # kernel source, numba_cache): no compile on a Hub user's first call after the first model
    assert "compiling the CPU kernels" not in result.stderr, result.stderr[-3000:]
