"""The same numbers for everyone: freshly compiled numba kernels and kernels loaded from numba's cache compute the
same bits, and clips rendered in a run are the clips a later run reuses. bench/determinism.py checks the whole main
job the same way (logged steps, weights, grids)."""

import subprocess
import sys
import textwrap

from conftest import ROOT, script_env
from modeling_stretchysnake.training.synthetic_actions import load_or_generate

# A forward and backward of a 2-layer model through the fused mixer (float32, CLS at both ends, 4 x 6 x 6 + 2
# tokens, so the scans cross a checkpoint chunk); prints how numba got the kernels, saves the logits and gradients.
FORWARD_BACKWARD = textwrap.dedent(
    """
    import sys, torch
    from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification
    from modeling_stretchysnake import selective_scan_numba as kernels
    torch.manual_seed(0)
    config = StretchySnakeConfig(hidden_size=32, num_hidden_layers=2, image_size=48, patch_size=8, num_frames=4,
                                 num_labels=5, cls_position="ends", drop_path_rate=0.0)
    model = StretchySnakeForVideoClassification(config)
    logits = model(torch.randn(2, 4, 3, 48, 48)).logits
    logits.square().sum().backward()
    stats = [kernels.shared_copy().dispatcher(kind).stats for kind in kernels.KERNELS]
    print("compiled", sum(s.cache_misses.total() for s in stats), "loaded", sum(s.cache_hits.total() for s in stats))
    torch.save({"logits": logits.detach(), **{n: p.grad for n, p in model.named_parameters()}}, sys.argv[1])
    """
)


def test_fresh_and_cached_kernels_compute_the_same_bits(tmp_path):
    import torch

    env = script_env(NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"), OMP_NUM_THREADS="2")
    runs = []
    for name in ("fresh", "cached"):
        result = subprocess.run([sys.executable, "-c", FORWARD_BACKWARD, str(tmp_path / f"{name}.pt")], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append((result.stdout.split()[-4:], torch.load(tmp_path / f"{name}.pt")))
    (fresh_how, fresh), (cached_how, cached) = runs
    assert fresh_how[:2] == ["compiled", "4"] and fresh_how[3] == "0", fresh_how  # 4 kernels, float32 compiled
    assert cached_how[:2] == ["compiled", "0"] and cached_how[3] == "4", cached_how  # ... then all loaded
    assert fresh.keys() == cached.keys() and len(fresh) > 10
    for name, value in fresh.items():
        assert torch.equal(value, cached[name]), name


def test_rendered_and_reused_clips_are_the_same_files(tmp_path):
    counts = {"train": 2, "test": 1}
    rendered = load_or_generate(tmp_path / "a", counts, seed=3, num_frames=6, size=32)
    files = sorted((tmp_path / "a").rglob("*.mp4"))
    stamps = [path.stat().st_mtime_ns for path in files]
    reused = load_or_generate(tmp_path / "a", counts, seed=3, num_frames=6, size=32)
    assert [path.stat().st_mtime_ns for path in files] == stamps  # loaded, not rendered again
    assert reused["train"].to_list() == rendered["train"].to_list()
    load_or_generate(tmp_path / "b", counts, seed=3, num_frames=6, size=32)  # a render elsewhere: the same bytes
    assert len(files) == 15
    for path in files:
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path
