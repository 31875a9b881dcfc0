"""A generated action dataset that needs motion to be told apart, written as real video files.

Each clip shows one square on a noisy background. The class is the square's motion (left, right, up, down or
still); the start position, colours and size are random, so any single frame fits every class. The clips are
rendered once at a native size and decoded at whatever frames x resolution a step asks for, like real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ACTIONS = ("move_left", "move_right", "move_up", "move_down", "stay_still")
# Named render settings (`render_action` options). "clear" is the main job's task: a big square on a quiet
# background that travels at least half the frame. "noisy" is the first version (small squares, +-20 noise, a third
# of the frame), which no small model of this project, ours or VideoMAE, learns on a CPU budget (bench/RESULTS.md).
# "brief_motion" is where the number of frames matters (bench/cascade.py): in a quarter of the clips the square
# makes a brief excursion (out and back within EXCURSION_FRAMES of the 24 frames) instead of crossing the frame, which
# few frames spread over the clip often miss. "fine_texture": in half of the clips the square is a checkerboard of
# 2-px cells whose mean is the background's, rendered at 192 px: visible only at a resolution that keeps its cells.
# "glimpses" (16-frame clips): in some clips the square is fast and seen in two consecutive frames only (it crosses
# its whole path between them, like an object flying through the view), never the first or last frame; uniform
# sampling of 16 frames sees both, of 8, 4 or 2 frames at most one. The other clips are the main job's.
TASKS = {
    "clear": {"noise": 4, "side_range": (1 / 4, 1 / 3), "min_travel": 1 / 2},
    "noisy": {"noise": 20, "side_range": (1 / 6, 1 / 3), "min_travel": 1 / 3},
    "brief_motion": {"noise": 4, "side_range": (1 / 4, 1 / 3), "min_travel": 1 / 2, "excursion_share": 0.25},
    "fine_texture": {"noise": 4, "side_range": (1 / 6, 1 / 3), "min_travel": 1 / 2, "size": 192,
                     "textured_share": 0.5},
    "glimpses": {"noise": 4, "side_range": (1 / 4, 1 / 3), "min_travel": 1 / 2, "num_frames": 16,
                 "glimpse_share": 0.15},
}
TEXTURE_CELL, TEXTURE_CONTRAST = 2, 60
EXCURSION_FRAMES = 3
_DIRECTIONS = {"move_left": (0, -1), "move_right": (0, 1), "move_up": (-1, 0), "move_down": (1, 0), "stay_still": (0, 0)}


def write_video(path: str | Path, frames: np.ndarray, fps: int = 12, codec: str = "mpeg4",
                display_rotation: int = 0) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames to a video file with PyAV (even H and W).

    display_rotation: degrees counter-clockwise that players should turn the stored frames (a phone's portrait
    recording stores landscape frames and such a rotation).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "3"} if codec == "mpeg4" else {}
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def render_action(action: str, num_frames: int = 24, size: int = 96, rng: np.random.Generator | None = None,
                  noise: int = 20, side_range: tuple[float, float] = (1 / 6, 1 / 3),
                  min_travel: float = 1 / 3, textured_share: float = 0.0, excursion_share: float = 0.0,
                  glimpse_share: float = 0.0) -> np.ndarray:
    """One clip (T, size, size, 3) uint8 of `action`.

    noise: amplitude of the per-frame uniform background noise; side_range: the square's side as fractions of
    `size` (low inclusive, high exclusive); min_travel: the shortest path of a moving square, as a fraction of size;
    textured_share: the chance that the square is a grey checkerboard (TEXTURE_CELL-px cells, +-TEXTURE_CONTRAST)
    on a grey background of its mean: visible only at a resolution that keeps its cells; excursion_share: the chance
    that a moving square goes out and back within EXCURSION_FRAMES frames (at a random time) instead of crossing;
    glimpse_share: the chance that the square is fast: drawn in two consecutive frames only (neither the first nor
    the last), at the start of its path in the first and at its end in the second.
    """
    rng = rng or np.random.default_rng()
    dy, dx = _DIRECTIONS[action]
    side = int(rng.integers(round(size * side_range[0]), round(size * side_range[1])))
    travel = int(rng.integers(min(round(size * min_travel), size - side - 1), size - side)) if (dy or dx) else 0
    # Pick the start so the whole path stays inside the frame.
    y0 = int(rng.integers(travel if dy < 0 else 0, size - side - (travel if dy > 0 else 0) + 1))
    x0 = int(rng.integers(travel if dx < 0 else 0, size - side - (travel if dx > 0 else 0) + 1))
    textured = textured_share > 0 and rng.random() < textured_share  # no draw without textures: clips as before
    if textured:
        background = np.full(3, rng.integers(TEXTURE_CONTRAST + noise, 256 - TEXTURE_CONTRAST - noise))
        rows, columns = np.indices((side, side)) // TEXTURE_CELL
        colour = (background + TEXTURE_CONTRAST * (2 * ((rows + columns) % 2) - 1)[..., None]).astype(np.uint8)
    else:
        background = rng.integers(0, 120, size=3)
        colour = rng.integers(130, 256, size=3)
    excursion = excursion_share > 0 and (dy or dx) and rng.random() < excursion_share  # no draw when off
    if excursion:  # out and back inside the clip: the first and last frames show the square at rest
        window = max(1, min(EXCURSION_FRAMES, num_frames - 2))
        first = int(rng.integers(1, max(num_frames - window, 2)))
    shown = range(num_frames)
    if glimpse_share > 0 and rng.random() < glimpse_share:  # no draw when off
        if num_frames < 4:
            raise ValueError(f"a glimpse needs at least 4 frames, got {num_frames}")
        glimpse_start = int(rng.integers(1, num_frames - 2))
        shown = (glimpse_start, glimpse_start + 1)
    clip = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1) if len(shown) == num_frames else float(t > shown[0])
        if excursion:
            middle = first + (window - 1) / 2
            progress = max(0.0, 1.0 - abs(t - middle) / (window / 2 + 0.5))
        noise_frame = rng.integers(-noise, noise + 1, size=(size, size, 1))
        frame = np.clip(background + noise_frame, 0, 255)
        y, x = round(y0 + dy * travel * progress), round(x0 + dx * travel * progress)
        if t in shown:
            frame[y : y + side, x : x + side] = colour
        clip[t] = frame
    return clip


def generate_action_dataset(root: str | Path, videos_per_class: dict[str, int] | int = 12, num_frames: int = 24,
                            size: int = 96, seed: int = 0, **render_options):
    """Render the dataset under `root` and return its manifest as a `datasets.DatasetDict` (saved to root/manifest).

    videos_per_class: an int (train split only) or {split: count}, e.g. {"train": 24, "test": 8}.
    render_options: `noise`, `side_range`, `min_travel` of `render_action`. What was rendered is recorded in
    root/generation.json, so `load_or_generate` can tell a finished render with the same settings from a stale one.
    """
    import logging

    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    root = Path(root).resolve()  # manifests hold absolute paths: usable from any working directory
    logging.getLogger(__name__).info("rendering the generated action dataset under %s", root)
    counts = {"train": videos_per_class} if isinstance(videos_per_class, int) else dict(videos_per_class)
    rng = np.random.default_rng(seed)
    features = Features({"video": Value("string"), "label": ClassLabel(names=list(ACTIONS)),
                         "label_name": Value("string"), "start": Value("float64"), "end": Value("float64"),
                         "time_unit": Value("string")})
    splits = {}
    for split, count in counts.items():
        rows = []
        for label, action in enumerate(ACTIONS):
            for i in range(count):
                clip = render_action(action, num_frames, size, rng, **render_options)
                path = write_video(root / split / action / f"{action}_{i:04d}.mp4", clip)
                rows.append({"video": str(path), "label": label, "label_name": action, "start": None, "end": None,
                             "time_unit": "frames"})
        splits[split] = Dataset.from_list(rows, features=features)
    manifest = DatasetDict(splits)
    manifest.save_to_disk(str(root / "manifest"))
    (root / "generation.json").write_text(json.dumps(_settings(counts, num_frames, size, seed, render_options)))
    return manifest


def load_or_generate(root: str | Path, videos_per_class: dict[str, int], seed: int = 0, task: str = "clear",
                     **kwargs):
    """The manifest under `root` if it was rendered with these settings, else a fresh render of the `task`."""
    from datasets import load_from_disk

    root = Path(root)
    options = dict(TASKS[task], **kwargs)
    render = {k: options.pop(k) for k in ("num_frames", "size") if k in options}
    expected = _settings(dict(videos_per_class), render.get("num_frames", 24), render.get("size", 96), seed, options)
    recorded = root / "generation.json"
    if (root / "manifest").exists() and recorded.exists() and json.loads(recorded.read_text()) == expected:
        return load_from_disk(str(root / "manifest"))
    return generate_action_dataset(root, videos_per_class, seed=seed, **render, **options)


def _settings(counts, num_frames, size, seed, render_options) -> dict:
    return json.loads(json.dumps({"videos_per_class": counts, "num_frames": num_frames, "size": size, "seed": seed,
                                  "render_options": render_options}))  # tuples -> lists, as read back
