"""Top-k labels for one video file at any scale.

    python recipes/predict.py --model outputs/stretchysnake-embedded/final --video clip.mp4 --frames 16 --resolution 112
    python recipes/predict.py --model M --video clip.mp4 --pipeline     # through transformers' pipeline()
    python recipes/predict.py --model M --video clip.mp4 --budget_ms 20 # the most accurate scale within 20 ms
    python recipes/predict.py --model M --video clip.mp4 --clips 4 --crops 3  # 12 views, probabilities averaged
    python recipes/predict.py --model M --video clip.mp4 --cascade     # the cheapest scale that is sure enough
    python recipes/predict.py --model OpenGVLab/VideoMamba/videomamba_m16_k400_f16_res224.pth --video clip.mp4

The video is decoded at the requested frames x resolution (frames spread over the whole clip, shortest-side
resize + centre crop) and classified in one forward pass; with --clips / --crops, every view (temporal clips at
the training stride, interleaved; crops along the longer side: the evaluation protocol) in one batch, and their
probabilities averaged. With --budget_ms (forward milliseconds at batch 1 on
this machine, measured on first use and cached) or --budget_gflops, the scale is the most accurate one within
the budget according to the model's evaluated grid (scale_accuracy.json, written by train.py and evaluate_model.py).
With --cascade, the model's fitted cascade (config.cascade, from calibrate_cascade.py) decides: the video is
decoded once at the cascade's largest scale and run at its cheapest first, at larger ones only while unsure.
"""

from __future__ import annotations

import argparse

import torch

from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.cascade import ScaleCascade, run_cascade
from modeling_stretchysnake.cli import run_cli
from modeling_stretchysnake.pretrained import load_model, resolve_model_reference


def predict(model, processor, video: str, frames: int, resolution: int, top_k: int = 5, clips: int = 1,
            crops: int = 1) -> list[tuple[str, float]]:
    views = [processor(video, scale=(frames, resolution), clip=clip, num_clips=clips, crop=crop,
                       num_crops=crops)["pixel_values"] for clip in range(clips) for crop in range(crops)]
    with torch.inference_mode():
        probabilities = model(torch.cat(views)).logits.softmax(-1).mean(0)
    top = probabilities.topk(min(top_k, probabilities.numel()))
    return [(model.config.id2label[int(i)], float(p)) for p, i in zip(top.values, top.indices)]


def predict_with_cascade(model, processor, video: str, cascade: ScaleCascade, top_k: int = 5
                         ) -> tuple[list[tuple[str, float]], tuple[int, int], float]:
    """Top-k labels, the scale that answered and the cost spent."""
    pixel_values = processor(video, scale=cascade.largest_scale)["pixel_values"]
    result = run_cascade(model, pixel_values, cascade)
    probabilities = result.logits[0].softmax(-1)
    top = probabilities.topk(min(top_k, probabilities.numel()))
    labels = [(model.config.id2label[int(i)], float(p)) for p, i in zip(top.values, top.indices)]
    return labels, cascade.scales[int(result.stage[0])], float(result.cost[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a model folder, a Hub model id, or an official VideoMamba checkpoint on the Hub, "
                             "OWNER/REPO/FILE.pth (converted once and cached), e.g. "
                             "OpenGVLab/VideoMamba/videomamba_m16_k400_f16_res224.pth")
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", type=int, default=None, help="default: the processor's (or model's) frames")
    parser.add_argument("--resolution", type=int, default=None, help="default: the processor's resolution")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--clips", type=int, default=1, help="temporal views, averaged")
    parser.add_argument("--crops", type=int, default=1, help="spatial views, averaged")
    parser.add_argument("--pipeline", action="store_true", help="run through transformers.pipeline")
    parser.add_argument("--cascade", action="store_true",
                        help="the model's fitted cascade over scales picks the scale per video (config.cascade)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget_ms", type=float, default=None,
                        help="pick the most accurate evaluated scale whose forward time here fits (ms, batch 1)")
    budget.add_argument("--budget_gflops", type=float, default=None,
                        help="pick the most accurate evaluated scale whose forward GFLOPs fit")
    parser.add_argument("--remeasure", action="store_true",
                        help="with a budget: time every scale afresh instead of using the cached forward times")
    args = parser.parse_args(argv)
    for name in ("frames", "resolution", "top_k", "clips", "crops"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1 (a scale is frames x resolution, e.g. --frames 16 --resolution 112)")
    for name in ("budget_ms", "budget_gflops"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    budgeted = args.budget_ms is not None or args.budget_gflops is not None
    if budgeted and (args.frames is not None or args.resolution is not None):
        parser.error("give a budget or a scale (--frames/--resolution), not both")
    if args.cascade and (budgeted or args.frames is not None or args.resolution is not None
                         or (args.clips, args.crops) != (1, 1)):
        parser.error("--cascade picks the scale itself: leave out --frames, --resolution, budgets, --clips, --crops")

    args.model = resolve_model_reference(args.model)  # a Hub checkpoint -> its converted folder
    model = load_model(StretchySnakeForVideoClassification, args.model).eval()
    try:
        processor = StretchySnakeVideoProcessor.from_pretrained(args.model)
    except OSError:  # a folder without a saved processor (e.g. a converted checkpoint)
        processor = StretchySnakeVideoProcessor(num_frames=model.config.num_frames, resolution=model.config.image_size)
    frames = processor.num_frames if args.frames is None else args.frames
    resolution = processor.resolution if args.resolution is None else args.resolution
    if budgeted:
        from modeling_stretchysnake.training.compute_budget import explain, pick_scale

        try:
            choice, table = pick_scale(model, args.model, args.budget_ms, args.budget_gflops, args.remeasure)
        except FileNotFoundError as error:
            parser.error(str(error))
        print(explain(choice, table, args.budget_ms, args.budget_gflops))
        frames, resolution = choice.scale.frames, choice.scale.resolution
    if args.cascade:
        try:
            cascade = ScaleCascade.from_dict(model.config.cascade)
        except ValueError as error:
            parser.error(str(error))
        if args.pipeline:
            from transformers import pipeline

            from modeling_stretchysnake import StretchySnakeVideoClassificationPipeline

            classify = pipeline("video-classification", model=model, video_processor=processor,
                                pipeline_class=StretchySnakeVideoClassificationPipeline)
            answers = classify(args.video, top_k=args.top_k, cascade=cascade)
            results = [(r["label"], r["score"]) for r in answers]
            frames, resolution = map(int, answers[0]["scale"].split("x"))
            cost = answers[0]["cost"]
        else:
            results, (frames, resolution), cost = predict_with_cascade(model, processor, args.video, cascade,
                                                                       args.top_k)
        print(f"{args.video}: answered at {frames} frames x {resolution} px by the cascade "
              f"({' -> '.join(f'{f}x{r}' for f, r in cascade.scales)}), {cost:.3g} {cascade.cost_unit} spent:")
        for label, score in results:
            print(f"  {score:6.3f}  {label}")
        return results
    if args.pipeline and (args.clips, args.crops) != (1, 1):
        parser.error("--pipeline classifies one view; leave out --clips / --crops or --pipeline")
    if args.pipeline:
        from transformers import pipeline

        from modeling_stretchysnake import StretchySnakeVideoClassificationPipeline

        processor.resolution = resolution
        classify = pipeline("video-classification", model=model, video_processor=processor,
                            pipeline_class=StretchySnakeVideoClassificationPipeline)
        results = [(r["label"], r["score"]) for r in classify(args.video, top_k=args.top_k, num_frames=frames)]
    else:
        results = predict(model, processor, args.video, frames, resolution, args.top_k, args.clips, args.crops)
    views = "" if (args.clips, args.crops) == (1, 1) else f", {args.clips} clips x {args.crops} crops"
    print(f"{args.video} at {frames} frames x {resolution} px{views}:")
    for label, score in results:
        print(f"  {score:6.3f}  {label}")
    return results


if __name__ == "__main__":
    run_cli(main)
