"""StretchySnakeVideoProcessor: videos (files, arrays, frame lists) -> pixel_values (B, T, C, R, R) at any scale.

Pure PyTorch resizing (no torchvision needed). Evaluation: shortest-side resize to R, then a centre crop (or
one of `num_crops` crops along the longer side). Flexible training: squash resize to R x R. Normalisation with
VideoMamba's ImageNet mean/std.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.video_processing_utils import BaseVideoProcessor

from .video_decoding import read_video, sample_frame_indices

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def _frames_to_tensor(frames) -> torch.Tensor:
    """Any frame stack -> uint8/float tensor (T, 3, H, W): channels-last or -first; gray and alpha handled."""
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(frame) for frame in frames])
    video = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if video.dim() == 3:  # (T, H, W) grayscale
        video = video.unsqueeze(-1)
    if video.dim() != 4:
        raise ValueError(f"a video must be 4-D (frames, height, width, channels); got shape {tuple(video.shape)}")
    if video.shape[-1] in (1, 3, 4) and video.shape[1] not in (1, 3, 4):
        video = video.permute(0, 3, 1, 2)  # channels last -> first
    elif video.shape[1] not in (1, 3, 4):
        raise ValueError(f"cannot find a channel axis of size 1, 3 or 4 in shape {tuple(video.shape)}")
    if video.shape[1] == 1:
        video = video.expand(-1, 3, -1, -1)
    elif video.shape[1] == 4:
        video = video[:, :3]
    return video


class StretchySnakeVideoProcessor(BaseVideoProcessor):
    r"""
    Prepares videos for StretchySnake at any (frames, resolution).

    Args:
        num_frames (`int`, defaults to 16): frames sampled uniformly over the whole video (or segment).
        resolution (`int`, defaults to 224): output side R.
        image_mean, image_std: normalisation (VideoMamba's ImageNet values).
        decoder (`str`, defaults to `"auto"`): both, each falling back on the other: decord first for squashed
            frames, PyAV first for the aspect-keeping (shortest side) resize, the faster per request as measured;
            torchcodec last where it loads; or `"decord"` / `"pyav"` / `"torchcodec"` alone.
    """

    model_input_names = ["pixel_values"]
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_sample_frames = True

    def __init__(self, num_frames: int = 16, resolution: int = 224, image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
                 image_std: Sequence[float] = IMAGENET_DEFAULT_STD, decoder: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.num_frames = num_frames
        self.resolution = resolution
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.decoder = decoder

    def prepare_frames(self, frames, resolution: int, training: bool = False, crop: int = 0,
                       num_crops: int = 1) -> torch.Tensor:
        """(T, H, W, C) frames -> normalised float (T, 3, R, R): squash (training) or resize + crop `crop` of
        `num_crops` along the longer side (eval)."""
        if not 0 <= crop < num_crops:
            raise ValueError(f"a spatial view is crop k of K with 0 <= k < K; got crop {crop} of {num_crops}")
        video = _frames_to_tensor(frames)
        if video.is_floating_point():
            if video.numel() and video.max() > 1.0 + 1e-3:
                raise ValueError(
                    f"float frames must hold values in [0, 1], got a maximum of {video.max().item():.4g}; pass 0..255 "
                    "frames as uint8 (they are rescaled) or divide float frames by 255"
                )
            video = video.float()
        else:
            video = video.float() / 255.0
        height, width = video.shape[-2:]
        if training:
            if (height, width) != (resolution, resolution):
                video = F.interpolate(video, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                      antialias=True)
        else:
            if min(height, width) != resolution:
                scale = resolution / min(height, width)
                size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
                video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
                height, width = size
            # One side now equals R; crops spread evenly along the other (left/centre/right for 3).
            def offset(extra: int) -> int:
                return extra // 2 if num_crops == 1 else round(extra * crop / (num_crops - 1))

            top, left = offset(height - resolution), offset(width - resolution)
            video = video[:, :, top : top + resolution, left : left + resolution]
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return ((video.clamp(0, 1) - mean) / std).contiguous()

    def _load(self, video, frames: int, resolution: int, training: bool, start, end, time_unit, stride, clip,
              num_clips):
        if _is_path(video):
            return read_video(video, frames, resolution, "squash" if training else "shortest", start, end, time_unit,
                              self.decoder, stride, clip, num_clips)
        if time_unit == "seconds" and (start is not None or end is not None):
            raise ValueError("a seconds range needs a video file (an array has no frame rate); give an array's "
                             "segment in frames (time_unit='frames')")
        stacked = _frames_to_tensor(video)
        indices = sample_frame_indices(stacked.shape[0], frames, int(start or 0), None if end is None else int(end),
                                       stride, clip, num_clips)
        return stacked[torch.as_tensor(indices)]

    def preprocess(self, videos, scale: tuple[int, int] | None = None, num_frames: int | None = None,
                   resolution: int | None = None, training: bool = False, do_sample_frames: bool | None = None,
                   start: float | None = None, end: float | None = None, time_unit: str = "frames",
                   frame_sampling_rate: int | None = None, clip: int = 0, num_clips: int = 1, crop: int = 0,
                   num_crops: int = 1, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """videos: a path (or the file's bytes, or a dataset row's {"path", "bytes"}), an array (T, H, W, C), a list
        of frames, or a list of any of these.

        scale=(frames, resolution) overrides num_frames/resolution. Frame sampling (uniform over the video or the
        start/end segment) applies to files and arrays alike; `do_sample_frames=False` keeps an array's frames.
        `frame_sampling_rate=k` (transformers' pipeline argument) takes frames k apart instead of spreading them
        over the segment. A multi-view evaluation asks for one view per call: temporal `clip` of `num_clips` (the
        training stride, interleaved: `sample_frame_indices`) and, in evaluation, spatial `crop` of `num_crops`
        along the longer side.
        """
        frames, size = scale if scale is not None else (num_frames or self.num_frames, resolution or self.resolution)
        check_scale(frames, size)
        if _is_path(videos) or _is_single_array_video(videos):
            videos = [videos]
        clips = []
        for video in videos:
            if do_sample_frames is False:
                if _is_path(video):
                    raise ValueError("do_sample_frames=False keeps an array's own frames; a video file is always "
                                     "sampled (set num_frames, or decode it yourself and pass the array)")
                raw = _frames_to_tensor(video)
            else:
                raw = self._load(video, frames, size, training, start, end, time_unit, frame_sampling_rate, clip,
                                 num_clips)
            clips.append(self.prepare_frames(raw, size, training=training, crop=crop, num_crops=num_crops))
        return BatchFeature(data={"pixel_values": torch.stack(clips)}, tensor_type=return_tensors)


def check_scale(frames, resolution) -> None:
    """Raise a ValueError that says what is expected unless frames and resolution are integers >= 1."""
    for name, value in (("frames", frames), ("resolution", resolution)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (a scale is (frames, resolution), e.g. (8, 224)); "
                             f"got {value!r}")


def _is_path(video) -> bool:
    """A video file: a path, the file's bytes, or a `datasets.Video(decode=False)` value {"path", "bytes"}."""
    if isinstance(video, dict):
        return set(video) <= {"path", "bytes"} and bool(video)
    return isinstance(video, (str, bytes)) or hasattr(video, "__fspath__")


def _is_single_array_video(videos) -> bool:
    """An array or tensor of one video (T, H, W[, C]), or a list of frames (each 2-D or 3-D)."""
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return videos.ndim in (3, 4)
    if isinstance(videos, (list, tuple)) and videos:
        first = videos[0]
        return not isinstance(first, (str, bytes, list, tuple)) and np.asarray(first).ndim in (2, 3)
    return False


__all__ = ["StretchySnakeVideoProcessor"]
