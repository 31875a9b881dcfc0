"""The training recipe end to end on tiny generated data: one process, a corrupt video (two processes:
test_multiprocess.py)."""

import json
import sys

import pytest
import torch

from conftest import ROOT, run_script, script_env
from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

TINY_RUN = [
    "--max_steps", "4", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
    "--train_frames", "2", "3", "--train_resolutions", "28", "56", "--eval_frames", "2", "4",
    "--eval_resolutions", "28", "--logging_steps", "1", "--base_frames", "4", "--cpu_threads", "1",
]


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    manifest = generate_action_dataset(root, {"train": 2, "test": 1}, num_frames=6, size=32)
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 64)
    # Add an unreadable video to the training split: the run must skip it, report it, and go on.
    rows = manifest["train"].to_list() + [{"video": str(broken), "label": 1, "label_name": "move_right",
                                           "start": None, "end": None, "time_unit": "frames"}]
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(rows, features=manifest["train"].features),
                 "test": manifest["test"]}).save_to_disk(str(root / "with_broken"))
    return root / "with_broken"


def test_train_recipe_one_process(manifest_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("variant: static_tokens\nlearning_rate: 0.001\npreset: embedded\n")
    out = tmp_path / "out"
    result = run_script([sys.executable, str(ROOT / "recipes" / "train.py"), "--config", str(config), "--manifest",
                  str(manifest_dir), "--output_dir", str(out), "--baseline", "3x28", *TINY_RUN], tmp_path)
    assert "top-1 accuracy (%) over frames x resolution, static_tokens" in result.stdout
    assert "top-1 accuracy (%) over frames x resolution, fixed 3x28" in result.stdout
    fixed_rows = json.loads((out / "fixed_scale" / "scale_grid.json").read_text())
    assert {(r["frames"], r["resolution"]) for r in fixed_rows} == {(2, 28), (4, 28)}
    assert (out / "fixed_scale" / "final" / "model.safetensors").exists()
    for picture in ("scale_grid_comparison.png", "training_curve.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    assert "unreadable videos skipped: " in result.stdout and "broken.mp4" in result.stdout + result.stderr
    rows = json.loads((out / "scale_grid.json").read_text())
    assert {(r["frames"], r["resolution"]) for r in rows} == {(2, 28), (4, 28)}
    assert (out / "scale_grid.png").read_bytes()[:4] == b"\x89PNG"
    final = out / "final"
    assert (final / "model.safetensors").exists() and (final / "modeling_stretchysnake.py").exists()
    assert (final / "video_preprocessor_config.json").exists()
    assert "pin_memory" not in result.stderr  # no warning the recipe can avoid on a CPU machine


def test_the_fixed_scale_model_is_the_same_trained_side_by_side_or_after(manifest_dir, tmp_path):
    """The baseline in a second process (the default in one CPU process) trains the model it would train after the
    flexible one in the same process: the same weights and grid, bit for bit, at the same thread count."""
    from safetensors.torch import load_file

    runs = {}
    for beside in ("true", "false"):
        out = tmp_path / beside
        result = run_script([sys.executable, str(ROOT / "recipes" / "train.py"), "--manifest", str(manifest_dir),
                             "--output_dir", str(out), "--baseline", "3x28", "--baseline_side_by_side", beside,
                             *TINY_RUN], tmp_path)
        assert ("in a second process, side by side" in result.stderr) == (beside == "true")
        runs[beside] = (load_file(out / "fixed_scale" / "final" / "model.safetensors"),
                        json.loads((out / "fixed_scale" / "scale_grid.json").read_text()),
                        load_file(out / "final" / "model.safetensors"))
    (beside_fixed, beside_grid, beside_flexible), (after_fixed, after_grid, after_flexible) = runs.values()
    assert beside_fixed.keys() == after_fixed.keys() and beside_grid == after_grid
    assert all(torch.equal(beside_fixed[name], after_fixed[name]) for name in beside_fixed)
    assert all(torch.equal(beside_flexible[name], after_flexible[name]) for name in beside_flexible)


def test_yaml_and_flags_override_order():
    sys.path.insert(0, str(ROOT / "recipes"))
    import train

    args, training_args = train.parse_arguments(["--variant", "static_patches", "--train_frames", "8", "16"])
    assert args.variant == "static_patches" and args.train_frames == [8, 16]
    assert training_args.output_dir == "outputs/stretchysnake-embedded" and training_args.label_smoothing_factor == 0.1


def test_fixed_scale_baseline_choice():
    sys.path.insert(0, str(ROOT / "recipes"))
    import train

    from modeling_stretchysnake import StretchySnakeConfig

    config = StretchySnakeConfig(image_size=112)
    parse = lambda *flags: train.parse_arguments(list(flags))[0]  # noqa: E731
    assert train.baseline_scale(parse("--train_frames", "4", "8"), config) == (8, 112)  # generated data: base scale
    assert train.baseline_scale(parse("--manifest", "somewhere"), config) is None  # real data: opt in
    assert train.baseline_scale(parse("--manifest", "somewhere", "--baseline", "16X224"), config) == (16, 224)
    assert train.baseline_scale(parse("--baseline", "none"), config) is None
    with pytest.raises(ValueError, match="FRAMESxRESOLUTION"):
        train.baseline_scale(parse("--baseline", "8-112"), config)


@pytest.mark.parametrize("config", sorted((ROOT / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_config_parses(config):
    sys.path.insert(0, str(ROOT / "recipes"))
    import warnings

    import train

    from modeling_stretchysnake.training.scales import ScaleSampler

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated option in a shipped config
        warnings.simplefilter("error", DeprecationWarning)
        args, training_args = train.parse_arguments(["--config", str(config)])
    sampler = ScaleSampler(args.variant, args.train_frames, args.train_resolutions, args.train_patch_sizes)
    assert sampler.all_scales()
    if not config.stem.startswith("variant_"):
        assert args.model_name_or_path and args.manifest and training_args.label_smoothing_factor == 0.1


def test_configs_combine_in_order():
    sys.path.insert(0, str(ROOT / "recipes"))
    import train

    configs = ROOT / "recipes" / "configs"
    args, training_args = train.parse_arguments(["--config", str(configs / "ucf101.yaml"), "--config",
                                                 str(configs / "variant_flexivit.yaml"), "--learning_rate", "3e-4"])
    assert args.variant == "flexivit" and args.train_resolutions == [240] and args.manifest == "manifests/ucf101"
    assert training_args.learning_rate == 3e-4


def test_a_single_cpu_process_uses_every_core(manifest_dir, tmp_path):
    """accelerate's single-process launcher sets OMP_NUM_THREADS=1; the recipe's default takes every core."""
    import os

    assert TINY_RUN[-2:] == ["--cpu_threads", "1"]
    default_threads = TINY_RUN[:-2]
    result = run_script([sys.executable, str(ROOT / "recipes" / "train.py"), "--manifest", str(manifest_dir),
                         "--output_dir", str(tmp_path / "out"), "--baseline", "none", *default_threads], tmp_path)
    cores = len(os.sched_getaffinity(0))
    assert f"with {cores} torch threads" in result.stderr  # run_script sets OMP_NUM_THREADS=1
    pinned = run_script([sys.executable, str(ROOT / "recipes" / "train.py"), "--manifest", str(manifest_dir),
                         "--output_dir", str(tmp_path / "out1"), "--baseline", "none", *TINY_RUN], tmp_path)
    assert "with 1 torch threads" in pinned.stderr


def test_cpu_numerics_default_to_portable_on_the_generated_data_only(tmp_path):
    sys.path.insert(0, str(ROOT / "recipes"))
    import portable_numerics

    assert portable_numerics.requested_mode([]) == "portable"  # the main job
    assert portable_numerics.requested_mode(["--manifest", "m"]) == "native"
    assert portable_numerics.requested_mode(["--manifest=m", "--cpu_numerics", "portable"]) == "portable"
    assert portable_numerics.requested_mode(["--cpu_numerics=native"]) == "native"
    config = tmp_path / "c.yaml"
    config.write_text("manifest: manifests/ucf101\n")
    assert portable_numerics.requested_mode(["--config", str(config)]) == "native"
    with pytest.raises(SystemExit, match="cpu_numerics must be one of"):
        portable_numerics.requested_mode(["--cpu_numerics", "fast"])


def test_portable_numerics_pin_torch_and_mkl_before_torch_loads():
    """In a fresh process: torch's AVX2 kernels on any CPU that has AVX2 (this one may have AVX-512), MKL's
    cross-vendor branch, oneDNN's AVX2 code; a user's own setting wins."""
    import subprocess

    import torch

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("portable numerics are for x86-64 CPUs with AVX2")
    script = ("import os, sys; sys.path.insert(0, 'recipes'); import portable_numerics as p; "
              "mode = p.apply_before_torch(sys.argv[1:]); import torch; print(p.describe(mode)); "
              "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'), "
              "os.environ.get('ONEDNN_MAX_CPU_ISA'))")
    env = {key: value for key, value in script_env().items() if key not in portable_numerics_names()}
    portable = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert portable.returncode == 0, portable.stderr[-2000:]
    assert portable.stdout.split()[-3:] == ["AVX2", "COMPATIBLE", "AVX2"], portable.stdout
    assert "the same bits on any x86-64 CPU" in portable.stdout and "not in effect" not in portable.stdout
    native = subprocess.run([sys.executable, "-c", script, "--manifest", "m"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert native.stdout.split()[-3:] == [torch.backends.cpu.get_cpu_capability(), "None", "None"], native.stdout
    own = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "MKL_CBWR": "AVX2"},
                         capture_output=True, text=True, timeout=300)
    assert own.stdout.split()[-2] == "AVX2" and "not in effect" in own.stdout, own.stdout


def portable_numerics_names():
    sys.path.insert(0, str(ROOT / "recipes"))
    import portable_numerics

    return set(portable_numerics.ENVIRONMENT)


def test_help_states_the_real_grid_and_the_baseline_default():
    result = run_script([sys.executable, str(ROOT / "recipes" / "train.py"), "--help"], ROOT)
    text = " ".join(result.stdout.split())
    assert "grid = R / patch size" in text and "R/16" not in text
    assert "no fixed-scale model with --manifest" in text


def test_make_demo_gives_the_launcher_every_value_it_would_default():
    """accelerate warns about each launcher value it defaults; the Makefile's demo line passes them all."""
    import re
    import subprocess

    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    launch = re.search(r"accelerate launch (.*?)\s+recipes/train\.py", makefile).group(1).split()
    script = ROOT / "tests" / "conftest.py"  # any script: only the launcher's own output matters here
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    result = subprocess.run(accelerate + launch + [str(script)], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "were not passed" not in result.stderr and "defaults used instead" not in result.stderr
    bare = subprocess.run(accelerate + [str(script)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert "were not passed" in bare.stderr  # the warning this avoids
