"""Class names of the heads that official VideoMamba checkpoints carry, shipped as JSON lists in label-index order.

- ``kinetics400.json``: the 400 Kinetics-400 classes in the order of the official K400 heads (alphabetical,
  "abseiling" first), as in mmaction2's ``tools/data/kinetics/label_map_k400.txt`` (PySlowFast and VideoMAE's
  heads use the same order).
- ``something_something_v2.json``: the 174 Something-Something V2 templates, brackets removed, in the order of the
  dataset's official ``something-something-v2-labels.json`` index ("Approaching something with your camera" is 0),
  as in mmaction2's ``tools/data/sthv2/label_map.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path

# name -> (file, number of classes, file-name tokens of checkpoints trained on it)
LABEL_SETS = {
    "kinetics400": ("kinetics400.json", 400, ("k400", "kinetics400", "kinetics_400")),
    "something_something_v2": ("something_something_v2.json", 174, ("ssv2", "sthv2", "sthsthv2", "something")),
}


def label_names(name: str) -> list[str]:
    """The class names of a label set (`LABEL_SETS`), index order."""
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; known: {sorted(LABEL_SETS)}")
    return json.loads((Path(__file__).parent / LABEL_SETS[name][0]).read_text())


def detect_label_set(num_classes: int | None, filename: str) -> str | None:
    """The label set of a checkpoint whose head has `num_classes` outputs and whose file name names the dataset
    (e.g. ``videomamba_m16_k400_f16_res224.pth``); None when the two do not agree on one set."""
    name = Path(filename).name.lower()
    for label_set, (_, size, tokens) in LABEL_SETS.items():
        if num_classes == size and any(token in name for token in tokens):
            return label_set
    return None
