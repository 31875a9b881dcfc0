"""Evaluate any saved (or converted VideoMamba) model on a dataset over a frames x resolution grid (the data: any
`datasets.load_dataset` source with --dataset_name, or a manifest, as recipes/train.py takes it).

    python recipes/evaluate_model.py --model outputs/stretchysnake-embedded/final \
        --manifest outputs/generated_actions/manifest
    python recipes/evaluate_model.py --model M --manifest D --frames 8 16 32 64 --resolutions 96 128 224 384 \
        --clips 2 --crops 3
    python recipes/evaluate_model.py --model M --manifest D --probes    # also 1-NN retrieval and a linear probe
    python recipes/evaluate_model.py --model M --manifest D --cascade   # the model's fitted cascade over scales
    python recipes/evaluate_model.py --model M --dataset_name OWNER/DATASET --split validation   # a Hub dataset
    python recipes/evaluate_model.py --model M --dataset_name csv --data_files test=test.csv      # a CSV of paths

(Not named evaluate.py: a script of that name in recipes/ would shadow the `evaluate` library for the recipes.)
Prints a table of top-1 accuracy (rows: frames, columns: resolution), writes CSV/JSON, the `video_accuracy` evaluate
module's results (scale_grid_evaluate.json, through `evaluate.save`) and a heatmap PNG of top-1 to --output_dir,
and the accuracy against forward cost per scale (pareto.png: time measured on this machine, at
batch 1). It also records the grid in the model folder (scale_accuracy.json; --no_save_to_model to leave the
folder alone), where `predict.py --budget_ms` and `compute_budget.pick_scale` find it. Protocol: frames spread
uniformly over each video (--clips > 1: that many temporal views at the same stride, interleaved; the README's
"Multi-view evaluation"), shortest-side resize to the resolution then --crops crops along the longer side; the
`video_accuracy` module averages each video's view probabilities.
The patch size at each resolution follows the model's scale_mode (static tokens: resolution / 14 for 224/16 models).
The probes use frozen CLS features of the --probe_train_split (train) and --split (test) sets at each grid scale.
--cascade evaluates the model's fitted cascade (config.cascade, from calibrate_cascade.py) instead of a grid: each
video decoded once at its largest scale, top-1, mean cost, the share answered at each scale (cascade.json).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.cascade import ScaleCascade
from modeling_stretchysnake.cli import run_cli
from modeling_stretchysnake.training.cascade_evaluation import measure_cascade
from modeling_stretchysnake.video_decoding import VideoDecodeError
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.training.distributed import end_processes
from modeling_stretchysnake.modeling_stretchysnake import resolve_patch_size
from modeling_stretchysnake.pretrained import load_model, resolve_model_reference
from modeling_stretchysnake.training.probes import probe_scores
from modeling_stretchysnake.training.compute_budget import cost_table, pareto_front, save_scale_accuracy
from modeling_stretchysnake.training.reporting import format_table, plot_pareto, write_results
from modeling_stretchysnake.training.scales import Scale, ScaleSampler
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer
from modeling_stretchysnake.training.video_datasets import DataArguments, load_video_splits, model_label_names


def parse(argv=None) -> tuple[DataArguments, argparse.Namespace]:
    # the data options (--dataset_name, --manifest, ...) are DataArguments' fields, as recipes/train.py takes them
    parser = HfArgumentParser(DataArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved StretchySnake folder, a Hub model id, or an official "
                                                       "VideoMamba checkpoint on the Hub, OWNER/REPO/FILE.pth")
    parser.add_argument("--split", default="test")
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[56, 84, 112, 168])
    parser.add_argument("--clips", type=int, default=1, help="temporal views per video")
    parser.add_argument("--crops", type=int, default=1, help="spatial views per video")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--probes", action="store_true", help="also 1-NN retrieval and linear probe on CLS features")
    parser.add_argument("--probe_train_split", default="train")
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--remeasure", action="store_true",
                        help="time every scale afresh instead of using the cached forward times")
    parser.add_argument("--output_dir", default=None,
                        help="where the tables and plots go (default: MODEL-evaluation beside a model folder, or "
                             "./evaluation for a Hub model id)")
    parser.add_argument("--no_save_to_model", action="store_true",
                        help="do not write scale_accuracy.json into the model folder")
    parser.add_argument("--cascade", action="store_true",
                        help="evaluate the model's fitted cascade over scales (config.cascade) instead of a grid")
    parser.add_argument("--cost", choices=["ms", "gflops", "none"], default="ms",
                        help="cost axis of pareto.png: forward ms measured here, GFLOPs, or no plot")
    data, args = parser.parse_args_into_dataclasses(argv)
    return data, args


def main(argv=None):
    data, args = parse(argv)
    if not data.given:
        raise SystemExit("evaluate_model.py: give the data: --dataset_name NAME_OR_PATH (anything load_dataset "
                         "takes) or --manifest FOLDER (data_scripts/)")
    args.data = data.source
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.model = resolve_model_reference(args.model)
    if args.output_dir is None:
        model_dir = Path(args.model)
        args.output_dir = str(model_dir.parent / f"{model_dir.name}-evaluation" if model_dir.is_dir()
                              else Path("evaluation"))
    model = load_model(StretchySnakeForVideoClassification, args.model).eval()
    splits = [args.split] + ([args.probe_train_split] if args.probes else [])
    videos = load_video_splits(data, splits, label_names=model_label_names(model.config))
    processor = StretchySnakeVideoProcessor(decoder=args.decoder)
    test_set = VideoClipDataset(videos[args.split], processor, training=False, decoder=args.decoder)
    if args.cascade:
        return evaluate_cascade(args, model, test_set)
    scales = [Scale(f, r, resolve_patch_size(model.config, r, r)) for f in args.frames for r in args.resolutions]
    trainer = StretchySnakeTrainer(
        model=model, args=TrainingArguments(output_dir=args.output_dir, per_device_eval_batch_size=args.batch_size,
                                            report_to="none", dataloader_num_workers=0,
                                            dataloader_pin_memory=torch.cuda.is_available()),
        eval_dataset=test_set, scale_sampler=ScaleSampler("static_tokens"), eval_scales=scales,
        eval_views=(args.clips, args.crops),
    )
    try:
        results = trainer.evaluate_scales()
        if args.probes:
            train_set = VideoClipDataset(videos[args.probe_train_split], processor, training=False,
                                         decoder=args.decoder)
            for scale in scales:
                results[scale].update(probe_scores(model, train_set, test_set, scale, model.config.num_labels,
                                                   args.batch_size, trainer.args.device))
    except VideoDecodeError as error:
        raise SystemExit(f"evaluate_model.py: cannot evaluate {args.data} [{args.split}]: {error}") from None
    unreadable = trainer.unreadable_videos(test_set)
    if trainer.is_world_process_zero():
        report(args, model, results, trainer.last_grid_metrics, len(test_set), unreadable)
    end_processes()
    return results


def evaluate_cascade(args, model, test_set) -> dict:
    """The fitted cascade on the split: printed, and written to OUTPUT_DIR/cascade.json."""
    try:
        cascade = ScaleCascade.from_dict(model.config.cascade)
    except ValueError as error:
        raise SystemExit(f"evaluate_model.py: {error}") from None
    summary = measure_cascade(model, test_set, cascade, args.batch_size)
    summary["cascade"] = cascade.to_dict()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    path = Path(args.output_dir) / "cascade.json"
    path.write_text(json.dumps(summary, indent=1))
    shares = ", ".join(f"{scale} {share:.0f}%" for scale, share in summary["answered_at"].items())
    print(f"\n{summary['videos']} videos of {args.data} [{args.split}], cascade "
          f"{' -> '.join(f'{f}x{r}' for f, r in cascade.scales)}: top-1 {summary['top1']:.1f}%, "
          f"{summary['mean_cost']:.3g} {cascade.cost_unit} and {summary['ms_per_video']:.1f} ms per video here; "
          f"answered at {shares}\nresults: {path}")
    return summary


def report(args, model, results, grid_metrics, num_videos, unreadable) -> None:
    """Print and write the grid (and the probes, the cost table and the Pareto front)."""
    paths = write_results(results, args.output_dir, title=f"{Path(args.model).name}: top-1 (%)",
                          grid_metrics=grid_metrics)
    print(f"\n{num_videos} videos of {args.data} [{args.split}], {args.clips} clip(s) x {args.crops} crop(s); "
          f"unreadable videos skipped: {len(unreadable)} distinct file(s) (all processes)"
          + (f": {unreadable}" if unreadable else "") + f"\nresults: {paths['csv']} (evaluate: {paths['evaluate']}), heatmap: {paths['png']}")
    for metric in ("top1", "mean_class_acc") + (("knn_top1", "linear_probe_top1") if args.probes else ()):
        print(f"\n{format_table(results, metric)}")
    if not args.no_save_to_model:
        print(f"\nscale grid recorded for compute budgets: {save_scale_accuracy(results, args.model)}")
    if args.cost != "none":
        accuracy = {scale: values["top1"] for scale, values in results.items()}
        table = cost_table(model, accuracy, args.cost, remeasure=args.remeasure)
        plot_pareto(table, Path(args.output_dir) / "pareto.png", args.cost)
        unit = "ms" if args.cost == "ms" else "GFLOPs"
        print(f"\naccuracy against cost ({unit} forward at batch 1), Pareto front marked *: "
              f"{Path(args.output_dir) / 'pareto.png'}")
        front = {row.scale for row in pareto_front(table, args.cost)}
        for row in sorted(table, key=lambda r: r.cost(args.cost)):
            print(f"  {'*' if row.scale in front else ' '} {row.scale.frames:>3} f x {row.scale.resolution:>4} px: "
                  f"{row.top1:5.1f}%  {row.cost(args.cost):9.3g} {unit}")


if __name__ == "__main__":
    run_cli(main)
