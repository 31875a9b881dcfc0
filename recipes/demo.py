"""Classify a generated clip at several frames x resolution scales with ONE StretchySnake model.

    python recipes/demo.py                       # a fresh StretchySnake-tiny (untrained: labels are arbitrary)
    python recipes/demo.py --model path/to/folder --scales 8x224 16x126 32x98

The clip (a square moving left to right over a gradient) is rendered directly at each requested scale,
normalised by the video processor (VideoMamba's ImageNet mean/std), and fed as (batch, frames, channels, H, W).
The model resizes its own patch kernel and position embeddings to each scale on the fly.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.modeling_stretchysnake import resolve_patch_size

def render_moving_square(frames: int, resolution: int) -> torch.Tensor:
    """A (frames, 3, R, R) clip in [0, 1]: a red square crossing a blue-green gradient."""
    rows = torch.linspace(0, 1, resolution)[:, None].expand(resolution, resolution)
    background = torch.stack([torch.full_like(rows, 0.1), rows.T, 1 - rows])  # (3, R, R)
    clip = background.expand(frames, -1, -1, -1).clone()
    side = max(1, resolution // 5)
    for t in range(frames):
        left = round((resolution - side) * t / max(frames - 1, 1))
        top = (resolution - side) // 2
        clip[t, :, top : top + side, left : left + side] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return clip


def parse_scale(text: str) -> tuple[int, int]:
    frames, resolution = text.lower().split("x")
    return int(frames), int(resolution)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved StretchySnake folder (default: a fresh model of --preset size)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "middle"))
    parser.add_argument("--scales", nargs="+", type=parse_scale, default=[(1, 224), (8, 98), (8, 224), (16, 126)],
                        help="FRAMESxRESOLUTION, e.g. 8x224")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.model:
        model = StretchySnakeForVideoClassification.from_pretrained(args.model)
        source = args.model
    else:
        labels = ["move left", "move right", "move up", "move down", "stand still"]
        config = StretchySnakeConfig.from_preset(args.preset, id2label=dict(enumerate(labels)))
        model = StretchySnakeForVideoClassification(config)
        source = f"fresh StretchySnake-{args.preset} (untrained: its labels are arbitrary)"
    model.eval()
    print(f"model: {source}; scale_mode={model.config.scale_mode}")

    processor = StretchySnakeVideoProcessor()  # normalisation (VideoMamba's ImageNet mean/std)
    base_features = None
    print(f"{'frames':>6} {'res':>5} {'patch':>5} {'tokens':>7} {'ms':>8} {'cos(CLS, first)':>15}  top-{args.top_k}")
    for frames, resolution in args.scales:
        clip = render_moving_square(frames, resolution)  # already R x R: prepare_frames only normalises
        pixel_values = processor.prepare_frames(clip, resolution, training=True).unsqueeze(0)
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = model.stretchysnake(pixel_values)
            logits = model.classifier(outputs.pooler_output)
        elapsed = (time.perf_counter() - start) * 1e3
        features = outputs.pooler_output[0]
        base_features = features if base_features is None else base_features
        similarity = F.cosine_similarity(features, base_features, dim=0).item()
        probabilities = logits.softmax(-1)[0]
        top = probabilities.topk(min(args.top_k, probabilities.numel()))
        names = ", ".join(f"{model.config.id2label[int(i)]} {p:.2f}" for p, i in zip(top.values, top.indices))
        patch = resolve_patch_size(model.config, resolution, resolution)
        tokens = outputs.last_hidden_state.shape[1]
        print(f"{frames:>6} {resolution:>5} {patch:>5} {tokens:>7} {elapsed:>8.1f} {similarity:>15.3f}  {names}")


if __name__ == "__main__":
    main()
