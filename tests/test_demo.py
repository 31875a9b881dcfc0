import sys

import torch

from conftest import ROOT, run_script

sys.path.insert(0, str(ROOT / "recipes"))

import demo  # noqa: E402


def test_rendered_clip_moves():
    clip = demo.render_moving_square(4, 28)
    assert clip.shape == (4, 3, 28, 28) and 0 <= clip.min() and clip.max() <= 1
    red = clip[:, 0] > 0.5
    columns = [torch.nonzero(red[t])[:, 1].float().mean() for t in range(4)]
    assert columns == sorted(columns) and columns[0] < columns[-1]


def test_demo_runs_a_saved_model_at_several_scales(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    result = run_script([sys.executable, str(ROOT / "recipes" / "demo.py"), "--model", str(tmp_path / "m"),
                         "--scales", "1x32", "3x16", "6x48"], tmp_path, timeout=300)
    rows = [line.split() for line in result.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("1", "32", "8", str(1 + 16)),
        ("3", "16", "4", str(1 + 3 * 16)),
        ("6", "48", "12", str(1 + 6 * 16)),
    ]
