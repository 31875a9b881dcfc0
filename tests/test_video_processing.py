import numpy as np
import pytest
import torch

from modeling_stretchysnake import StretchySnakeVideoProcessor
from modeling_stretchysnake.training.synthetic_actions import write_video


@pytest.fixture
def processor():
    return StretchySnakeVideoProcessor(num_frames=4, resolution=28)


def test_file_path_at_a_requested_scale(processor, tmp_path):
    path = write_video(tmp_path / "v.mp4", np.random.default_rng(0).integers(0, 255, (10, 40, 60, 3), dtype=np.uint8))
    assert processor(str(path))["pixel_values"].shape == (1, 4, 3, 28, 28)
    assert processor([str(path), path], scale=(6, 56))["pixel_values"].shape == (2, 6, 3, 56, 56)


def test_arrays_frame_lists_gray_and_alpha(processor):
    rgb = np.random.default_rng(0).integers(0, 255, (9, 30, 40, 3), dtype=np.uint8)
    out = processor(rgb)["pixel_values"]
    assert out.shape == (1, 4, 3, 28, 28)
    torch.testing.assert_close(processor(list(rgb))["pixel_values"], out)
    torch.testing.assert_close(processor(torch.from_numpy(rgb).permute(0, 3, 1, 2))["pixel_values"], out)
    gray = processor(rgb[..., 0])["pixel_values"]
    assert gray.shape == (1, 4, 3, 28, 28)
    torch.testing.assert_close(gray[:, :, 0] * 0.229 + 0.485, gray[:, :, 1] * 0.224 + 0.456)  # same value in all channels
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1)
    torch.testing.assert_close(processor(rgba)["pixel_values"], out)
    assert processor([rgb, rgb[:5]])["pixel_values"].shape == (2, 4, 3, 28, 28)


def test_eval_center_crop_vs_training_squash(processor):
    video = np.zeros((4, 20, 40, 3), np.uint8)
    video[:, :, 10:30] = 255  # bright middle band
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    center = processor(video, resolution=20)["pixel_values"][0, 0] * std + mean
    assert center.min() > 0.95  # the centre crop sees only the band
    squashed = processor(video, resolution=20, training=True)["pixel_values"][0, 0] * std + mean
    assert squashed[:, :, 0].max() < 0.05 and squashed[:, :, 10].min() > 0.95


def test_normalisation_uses_videomamba_mean_and_std(processor):
    white = np.full((2, 28, 28, 3), 255, np.uint8)
    out = processor(white, num_frames=2)["pixel_values"][0, 0, :, 0, 0]
    torch.testing.assert_close(out, (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


def test_bad_input_raises(processor):
    with pytest.raises(ValueError, match="channel"):
        processor(np.zeros((4, 5, 6, 7), np.uint8))


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = StretchySnakeVideoProcessor.from_pretrained(tmp_path)
    assert (loaded.num_frames, loaded.resolution) == (4, 28)
    assert (tmp_path / "video_processing_stretchysnake.py").exists()
