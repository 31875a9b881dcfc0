"""Single-view against multi-view evaluation of one trained model: top-1 per scale for each clips x crops setting,
side by side in one run (the same model, clips and scales; the views follow `data.sample_frame_indices`).

    python bench/views.py                                   # the main job's model at 8 x 56, views 1x1 2x3 4x3
    python bench/views.py --model M --manifest D --frames 8 16 --resolutions 56 112 --views 1x1 2x1 4x1 4x3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from datasets import load_from_disk
from transformers import TrainingArguments

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.modeling_stretchysnake import resolve_patch_size
from modeling_stretchysnake.training.scales import Scale, ScaleSampler
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/stretchysnake-embedded/final")
    parser.add_argument("--manifest", default="outputs/generated_actions/manifest")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, nargs="+", default=[8])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[56])
    parser.add_argument("--views", nargs="+", default=["1x1", "2x3", "4x3"], help="CLIPSxCROPS settings")
    parser.add_argument("--output", default=None, help="a JSON file for the results")
    args = parser.parse_args(argv)
    model = StretchySnakeForVideoClassification.from_pretrained(args.model).eval()
    processor = StretchySnakeVideoProcessor.from_pretrained(args.model)
    dataset = VideoClipDataset(load_from_disk(args.manifest)[args.split], processor, training=False)
    scales = [Scale(f, r, resolve_patch_size(model.config, r, r)) for f in args.frames for r in args.resolutions]
    trainer = StretchySnakeTrainer(
        model=model, args=TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_eval_batch_size=8,
                                            report_to="none", disable_tqdm=True),
        eval_dataset=dataset, scale_sampler=ScaleSampler("static_tokens"), eval_scales=scales)
    results = {}
    for views in args.views:
        trainer.eval_views = tuple(int(v) for v in views.lower().split("x"))
        results[views] = {f"{s.frames}x{s.resolution}": values["top1"]
                          for s, values in trainer.evaluate_scales().items()}
    print(f"top-1 (%) of {args.model} on {len(dataset)} videos ({args.manifest} [{args.split}]), views = clips x crops:")
    names = list(next(iter(results.values())))
    print(f"{'views':>8} | " + " | ".join(f"{name:>8}" for name in names))
    for views, row in results.items():
        print(f"{views:>8} | " + " | ".join(f"{row[name]:8.1f}" for name in names))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
