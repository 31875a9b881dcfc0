"""The numba CPU kernels are compiled once per machine: for a dtype when a call first needs it (an inference process
compiles the forward kernels only), with one log line while numba works, into a cache folder keyed by the kernel
file's content, which every copy of that file (a saved model's code loaded with trust_remote_code, another revision)
loads from. Fresh, cached and shared kernels compute the same bits (tests/test_determinism.py: fresh and cached)."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import ROOT, script_env

PACKAGE = ROOT / "modeling_stretchysnake"
NOTICE = "compiling the CPU kernels"

# A small model's forward (and, with "train", backward) in a fresh process; prints which kernels that process
# compiled, loaded from the cache or never touched.
MODEL_STEP = textwrap.dedent(
    """
    import sys, torch
    from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification
    from modeling_stretchysnake.selective_scan_fused import numba_kernels
    from modeling_stretchysnake import selective_scan_numba
    torch.manual_seed(0)
    config = StretchySnakeConfig(hidden_size=32, num_hidden_layers=1, image_size=32, patch_size=8, num_frames=2,
                                 num_labels=3, drop_path_rate=0.0)
    model = StretchySnakeForVideoClassification(config)
    with torch.set_grad_enabled(sys.argv[1] == "train"):
        logits = model(torch.randn(1, 2, 3, 32, 32)).logits
        if sys.argv[1] == "train":
            logits.sum().backward()
    kernels = selective_scan_numba.shared_copy()
    for kind in kernels.KERNELS:
        for dtype in ("float32", "float64"):
            stats = kernels.dispatcher(kind).stats
            hits = sum(n for sig, n in stats.cache_hits.items() if str(sig.args[3]).startswith(f"array({dtype}"))
            misses = sum(n for sig, n in stats.cache_misses.items() if str(sig.args[3]).startswith(f"array({dtype}"))
            print(kind, dtype, "compiled" if misses else "loaded" if hits else "untouched")
    """
)


def run_model_step(mode, cache):
    result = subprocess.run([sys.executable, "-c", MODEL_STEP, mode], cwd=ROOT, capture_output=True, text=True,
                            env=script_env(NUMBA_CACHE_DIR=str(cache)), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    states = dict(((kind, dtype), state) for kind, dtype, state in map(str.split, result.stdout.splitlines()))
    return states, [line for line in result.stderr.splitlines() if NOTICE in line]


def test_kernels_compile_when_first_needed_and_say_so_once(tmp_path):
    cache = tmp_path / "numba_cache"
    states, notices = run_model_step("infer", cache)  # inference: the float32 forward kernels, nothing else
    assert {key for key, state in states.items() if state != "untouched"} == {
        ("conv_silu_forward", "float32"), ("scan_forward", "float32")}
    assert states["scan_forward", "float32"] == "compiled"
    assert len(notices) == 1 and "float32: conv_silu_forward, scan_forward" in notices[0], notices

    states, notices = run_model_step("train", cache)  # training: the forward loaded, the backward compiled
    assert states["scan_forward", "float32"] == "loaded" and states["scan_backward", "float32"] == "compiled"
    assert states["conv_silu_backward", "float32"] == "compiled" and states["scan_backward", "float64"] == "untouched"
    assert len(notices) == 1, notices

    states, notices = run_model_step("train", cache)  # then all from the cache, silently
    assert {state for (_, dtype), state in states.items() if dtype == "float32"} == {"loaded"}
    assert notices == []


# The fused scan through a copy of the kernel files imported as `package.selective_scan_numba` from `folder`,
# optionally after the installed package's copy ran it; prints the copies' shared module names, whether
# the copy runs the package's kernels, and how the copy's own scan kernel came to be; saves the output.
SCAN_THROUGH_A_COPY = textwrap.dedent(
    """
    import importlib, sys
    import numpy as np
    folder, package, out_file, with_installed = sys.argv[1:5]
    names = []
    if with_installed == "yes":
        import modeling_stretchysnake.selective_scan_numba as installed
        names.append(installed.SHARED_NAME)
    sys.path.insert(0, folder)
    copy = importlib.import_module(package + ".selective_scan_numba")
    names.append(copy.SHARED_NAME)
    rng = np.random.default_rng(0)
    u, delta, z = (rng.standard_normal((1, 16, 8), dtype=np.float32) for _ in range(3))
    A = -rng.random((16, 16), dtype=np.float32)
    B, C = (rng.standard_normal((1, 8, 16), dtype=np.float32) for _ in range(2))
    D, bias = np.ones(16, dtype=np.float32), np.zeros(16, dtype=np.float32)
    for module in ([installed] if with_installed == "yes" else []) + [copy]:  # the installed package's first
        out, checkpoints = np.zeros((1, 16, 8), dtype=np.float32), np.zeros((1, 16, 1, 16), dtype=np.float32)
        module.scan_forward(u, delta, A, B, C, D, z, bias, True, True, True, True, False, False, out, checkpoints)
    np.save(out_file, out)
    stats = copy.dispatcher("scan_forward").stats
    shared = copy.shared_copy() is sys.modules["modeling_stretchysnake.selective_scan_numba"] \\
        if with_installed == "yes" else copy.shared_copy() is copy
    print(*names, "shared", shared, "compiled", stats.cache_misses.total(), "loaded", stats.cache_hits.total())
    """
)


def saved_copy(folder: Path, package: str, comment: str = "") -> Path:
    """The kernel files as a saved model folder holds them (transformers copies them verbatim), as a package."""
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text("")
    shutil.copy(PACKAGE / "numba_cache.py", folder / package)
    (folder / package / "selective_scan_numba.py").write_text(
        (PACKAGE / "selective_scan_numba.py").read_text() + comment)
    return folder


def scan_through_a_copy(folder, package, out_file, with_installed, cache, hide_package=False):
    # the package hidden: PYTHONPATH without the repository, run from elsewhere (the test venv has it installed
    # in editable mode, so a meta-path hook stands in for "not installed")
    script = SCAN_THROUGH_A_COPY
    if hide_package:
        script = textwrap.dedent(
            """
            import sys
            class Hide:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "modeling_stretchysnake":
                        raise ImportError("hidden for this test")
            sys.meta_path.insert(0, Hide())
            """
        ) + script
    result = subprocess.run([sys.executable, "-c", script, str(folder), package, str(out_file), with_installed],
                            cwd=folder, capture_output=True, text=True,
                            env=script_env(NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT)), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


def test_copies_of_the_kernel_source_share_one_compiled_cache_entry(tmp_path):
    cache = tmp_path / "numba_cache"
    # the installed package compiles; a saved model's copy, imported next to it, runs the package's kernels and
    # its own dispatcher loads the entry the package wrote
    first = saved_copy(tmp_path / "model_a", "revision_1")
    words = scan_through_a_copy(first, "revision_1", tmp_path / "a.npy", "yes", cache)
    installed_name, copy_name = words[:2]
    assert installed_name == copy_name and words[2:] == ["shared", "True", "compiled", "0", "loaded", "1"], words

    # another revision, without the package: its first call loads what the package compiled
    second = saved_copy(tmp_path / "model_b", "revision_2")
    words = scan_through_a_copy(second, "revision_2", tmp_path / "b.npy", "no", cache, hide_package=True)
    assert words[0] == installed_name and words[1:] == ["shared", "True", "compiled", "0", "loaded", "1"], words

    # a copy whose source differs (here by a comment) has its own name and entries
    edited = saved_copy(tmp_path / "model_c", "revision_3", comment="\n# edited\n")
    words = scan_through_a_copy(edited, "revision_3", tmp_path / "c.npy", "no", cache, hide_package=True)
    assert words[0] != installed_name and words[1:] == ["shared", "True", "compiled", "1", "loaded", "0"], words

    outputs = [np.load(tmp_path / f"{name}.npy") for name in "abc"]  # compiled, shared and compiled again: same bits
    assert np.isfinite(outputs[0]).all() and all(np.array_equal(outputs[0], other) for other in outputs[1:])
    assert sorted(path.name for path in cache.iterdir()) == sorted({installed_name, words[0]})
