"""Fit a confidence cascade over scales for a model on a validation split, and save the rule in its config.

    python recipes/calibrate_cascade.py --model outputs/stretchysnake-embedded/final \
        --manifest outputs/generated_actions/manifest --split validation
    python recipes/calibrate_cascade.py --model M --manifest D --target_top1 95      # a stated top-1
    python recipes/calibrate_cascade.py --model M --manifest D --budget 0.5         # mean GFLOPs per video

Every video of the split is decoded once at the largest scale of the grid (--frames x --resolutions); each scale's
logits come from that decode (a frame subset, resized). The stages are chosen among the scales on the accuracy-cost
front, cheapest first (cost: forward GFLOPs per clip, or --cost ms measured here at batch 1), with their thresholds:
the cheapest rule that reaches the target (default: the best single scale's top-1 on this split), or the most
accurate within --budget. The rule goes into the model folder's config.json (`cascade`), where `pipeline(..., cascade=True)`,
`predict.py --cascade` and `evaluate_model.py --cascade` read it. Use a split the model did not train on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import HfArgumentParser

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.cascade import COMBINES, CONFIDENCES, fit_cascade
from modeling_stretchysnake.cli import run_cli
from modeling_stretchysnake.training.cascade_evaluation import cheapest_first_front, scale_costs, stage_logits
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.training.video_datasets import DataArguments, load_video_splits, model_label_names


def main(argv=None):
    # the data options (--dataset_name, --manifest, ...) are DataArguments' fields, as recipes/train.py takes them
    parser = HfArgumentParser(DataArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved model folder (the rule is written into it)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[56, 84, 112, 168])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target_top1", type=float, default=None,
                        help="reach this top-1 (%%) at the least cost (default: the best single scale's)")
    target.add_argument("--budget", type=float, default=None, help="the most accurate rule within this mean cost")
    parser.add_argument("--cost", choices=["gflops", "ms"], default="gflops")
    parser.add_argument("--confidence", choices=CONFIDENCES, default="max_probability")
    parser.add_argument("--combine", choices=[*COMBINES, "best"], default="best",
                        help="how stages' evidence combines; best (the default): the better on this split")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--decoder", default="auto")
    data, args = parser.parse_args_into_dataclasses(argv)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model must be a saved model folder (the rule is written into its config.json): {args.model}")
    if not data.given:
        parser.error("give the data: --dataset_name NAME_OR_PATH (anything load_dataset takes) or --manifest FOLDER")
    model = StretchySnakeForVideoClassification.from_pretrained(args.model).eval()
    videos = load_video_splits(data, [args.split], label_names=model_label_names(model.config))
    dataset = VideoClipDataset(videos[args.split], StretchySnakeVideoProcessor(decoder=args.decoder),
                               training=False, decoder=args.decoder)
    grid = [(f, r) for f in args.frames for r in args.resolutions]
    logits, labels = stage_logits(model, dataset, grid, args.batch_size)
    top1 = [100.0 * (logits[i].argmax(-1) == labels).double().mean().item() for i in range(len(grid))]
    costs = scale_costs(model, grid, args.cost)
    stages = cheapest_first_front(grid, top1, costs)
    cascade = fit_cascade(logits[stages], labels, [grid[i] for i in stages], [costs[i] for i in stages],
                          args.target_top1, args.budget, args.confidence, args.combine, args.cost)
    cascade.fitted.update(split=args.split, data=data.source)
    model.config.cascade = cascade.to_dict()
    model.config.save_pretrained(args.model)
    unit = "GFLOPs" if args.cost == "gflops" else "ms"
    print(f"{len(labels)} videos of {data.source} [{args.split}]; single scales (front marked *):")
    for i, (f, r) in enumerate(grid):
        print(f"  {'*' if i in stages else ' '} {f:>3} f x {r:>4} px: top-1 {top1[i]:5.1f}%  {costs[i]:8.3g} {unit}")
    fitted = cascade.fitted
    best = max(range(len(grid)), key=lambda i: (top1[i], -costs[i]))
    print(f"cascade {' -> '.join(f'{f}x{r}' for f, r in cascade.scales)}, thresholds "
          f"{[round(t, 4) for t in cascade.thresholds]} ({cascade.confidence}, {cascade.combine}): "
          f"top-1 {fitted['top1']:.1f}% at {fitted['mean_cost']:.3g} {unit} per video (the best single scale, "
          f"{grid[best][0]}x{grid[best][1]}: {top1[best]:.1f}% at {costs[best]:.3g} {unit})")
    print(f"saved in {Path(args.model) / 'config.json'} (config.cascade)")
    return json.loads(json.dumps(cascade.to_dict()))


if __name__ == "__main__":
    run_cli(main)
