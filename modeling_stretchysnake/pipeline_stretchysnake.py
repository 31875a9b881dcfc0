"""The `video-classification` pipeline for StretchySnake: transformers' own, plus the two things its
video-processor path leaves out.

Saved model folders name this class in `config.custom_pipelines`, so `pipeline("video-classification",
model=folder_or_repo, trust_remote_code=True)` builds it from the folder's copy of this file.
"""

from __future__ import annotations

import collections.abc

import torch
from torch.utils.data import DataLoader
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.pipelines.video_classification import VideoClassificationPipeline

from .cascade import CascadeClassifierOutput, ScaleCascade, run_cascade


def stack_clips(items: list) -> dict[str, torch.Tensor]:
    """Collate preprocessed clips (each pixel_values (1, T, C, R, R), one scale per call) into one batch."""
    return {"pixel_values": torch.cat([item["pixel_values"] for item in items])}


class StretchySnakeVideoClassificationPipeline(VideoClassificationPipeline):
    """transformers' `VideoClassificationPipeline`, where:

    - `frame_sampling_rate=k` reaches the video processor: `num_frames` frames k apart from the start of the
      video, as transformers documents the argument (its video-processor path drops it). Without it, frames
      are spread over the whole video (the model's protocol).
    - `batch_size > 1` works: transformers only batches through a tokenizer or feature extractor, but clips
      of one call share a scale, so their pixel values stack.
    - `cascade=True` answers each video at the cheapest scale that is confident enough, with the rule fitted
      for the model (`config.cascade`; or pass a `ScaleCascade`): the video is decoded once at the cascade's
      largest scale, and every result also names the `scale` ("frames x resolution") that answered and the
      `cost` spent (in the rule's cost unit, e.g. GFLOPs).
    """

    def _sanitize_parameters(self, cascade=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if cascade is not None and cascade is not False:
            if cascade is True:
                cascade = ScaleCascade.from_dict(self.model.config.cascade)
            elif isinstance(cascade, dict):
                cascade = ScaleCascade.from_dict(cascade)
            for params in (preprocess_params, forward_params, postprocess_params):
                params["cascade"] = cascade
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, video, num_frames=None, frame_sampling_rate=None, cascade=None):
        if num_frames is None:
            num_frames = self.model.config.num_frames
        options = {"num_frames": num_frames, "do_sample_frames": True}
        if cascade is not None:
            options = {"scale": cascade.largest_scale}
        if frame_sampling_rate is not None:
            options["frame_sampling_rate"] = frame_sampling_rate
        return self.video_processor(video, **options, return_tensors="pt").to(self.dtype)

    def _forward(self, model_inputs, cascade=None):
        if cascade is None:
            return super()._forward(model_inputs)
        result = run_cascade(self.model, model_inputs["pixel_values"], cascade)
        return CascadeClassifierOutput(logits=result.logits, stage=result.stage, cost=result.cost)

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None, cascade=None):
        results = super().postprocess(model_outputs, top_k=top_k, function_to_apply=function_to_apply)
        if cascade is not None:
            frames, resolution = cascade.scales[int(model_outputs.stage[0])]
            for result in results:
                result.update(scale=f"{frames}x{resolution}", cost=float(model_outputs.cost[0]))
        return results

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        if batch_size == 1:
            return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                        postprocess_params)
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)  # as transformers: an iterable is not split across workers
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=stack_clips)
        outputs = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(outputs, self.postprocess, postprocess_params)


PIPELINE_TASK = "video-classification"
CUSTOM_PIPELINES = {PIPELINE_TASK: {"impl": f"{__name__.rsplit('.', 1)[-1]}.StretchySnakeVideoClassificationPipeline",
                                    "pt": ["AutoModelForVideoClassification"]}}

__all__ = ["StretchySnakeVideoClassificationPipeline", "CUSTOM_PIPELINES"]
