"""Convert an official VideoMamba checkpoint (.pth) into a Hugging Face StretchySnake folder.

    stretchysnake-convert-videomamba OpenGVLab/VideoMamba/videomamba_m16_k400_f16_res224.pth out/   # from the Hub
    stretchysnake-convert-videomamba videomamba_m16_k400_f16_res224.pth out/                        # a local file
    python -m modeling_stretchysnake.convert_videomamba_checkpoint CHECKPOINT OUT                   # the same

A Hub checkpoint is written OWNER/REPO/FILE[@REVISION] and downloaded with huggingface_hub (its cache,
HF_HUB_OFFLINE, HF_ENDPOINT and token apply). The folder gets the weights (safetensors), the config and the video
processor, ready for `pipeline("video-classification", model=OUT)`. Kinetics-400 and Something-Something V2 heads
get their class names (recognised from the head size and the file name; `--labels` overrides).

Accepts a raw state dict or one wrapped under `model` / `module`, with or without `backbone.` / `encoder.`
prefixes; masked-pretraining files (`norm` instead of `norm_f`, a `clip_decoder`) and ImageNet files (2-D patch
kernel, no temporal embedding, which then starts at zero) work too. The size, base frames, base resolution and
label count are read from the tensors. Any key that maps nowhere, and any model weight the file lacks, stops the
conversion with the list of keys: nothing is silently dropped except the `clip_decoder` distillation head.
"""

from __future__ import annotations

import _compat_pickle
import logging
import math
import re
from pathlib import Path

import torch

from .configuration_stretchysnake import StretchySnakeConfig
from .labels import detect_label_set, label_names
from .modeling_stretchysnake import StretchySnakeForVideoClassification

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("model", "module", "state_dict")
PREFIXES = ("module.", "backbone.", "encoder.")
DROPPED_PREFIXES = ("clip_decoder.",)
# Keys allowed to be absent from a file: image (ImageNet) checkpoints have no temporal embedding, and
# pretraining checkpoints have no head (a new one is initialised when num_labels is given).
OPTIONAL_TARGETS = ("stretchysnake.embeddings.temporal_position_embeddings",)
HEAD_TARGETS = ("classifier.weight", "classifier.bias")

_DIRECT = {
    "patch_embed.proj.weight": "stretchysnake.embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "stretchysnake.embeddings.patch_embeddings.bias",
    "cls_token": "stretchysnake.embeddings.cls_token",
    "pos_embed": "stretchysnake.embeddings.position_embeddings",
    "temporal_pos_embedding": "stretchysnake.embeddings.temporal_position_embeddings",
    "norm_f.weight": "stretchysnake.norm_f.weight",
    "head.weight": "classifier.weight",
    "head.bias": "classifier.bias",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(norm\.weight|mixer\..+)$")


class ConversionError(ValueError):
    """The checkpoint does not map onto a StretchySnake model."""


class NotACheckpointError(ConversionError):
    """The file is not a PyTorch checkpoint at all (random bytes, a truncated or an HTML file)."""


def checkpoint_safe_globals() -> list:
    """What training-state checkpoints carry besides tensors and is harmless to build: the official training code
    saves its argparse.Namespace of options, and epochs or metrics are often numpy scalars. Each is allowed under
    the name numpy 1.x pickles it by as well as numpy 2's."""
    import argparse

    import numpy as np

    allowed = [argparse.Namespace, np.dtype, *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}]
    scalar = np.dtype(np.float64).type(0).__reduce__()[0]  # numpy's scalar reconstructor
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed.append((scalar, f"{module}.scalar"))
    return allowed


# torch's two wordings for a global a weights-only load refuses: one not allowlisted, one of a blocked module (os,
# subprocess, ...: "GLOBAL posix.system whose module posix is blocked")
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) (?:was not an allowed global|whose module)")


def _refused_globals(path, error: Exception) -> list[str]:
    """The globals a weights-only load refused in `path` (besides those allowed), from the file or the message;
    a name pickled under its Python 2 module (protocol 2 writes subprocess.Popen as commands.Popen) with its own."""
    allowed = {entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
               for entry in checkpoint_safe_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - an older torch, or a file it cannot list: read the message instead
        found = _REFUSED_GLOBAL.findall(str(error))
    names = []
    for name in found:
        if name in allowed:
            continue
        module, _, attribute = name.rpartition(".")
        python3 = _compat_pickle.IMPORT_MAPPING.get(module)
        names.append(f"{name} ({python3}.{attribute})" if python3 and python3 != module else name)
    return names


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .pth file safely (weights_only, plus `checkpoint_safe_globals`) and unwrap container dicts and name
    prefixes."""
    if not Path(path).is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - bytes that are no checkpoint fail in many ways (pickle, zip, utf-8)
        refused = _refused_globals(path, error) if _REFUSED_GLOBAL.search(str(error)) else []
        if refused:
            raise ConversionError(
                f"{path} holds {', '.join(refused)}, which a safe load (weights_only) does not build: keep only its "
                f"tensors where you trust the file (torch.save(checkpoint['model'], 'weights.pth') in the code that "
                f"wrote it) and convert that file") from None
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().split("\n")[0].split(". ")[0]
        raise NotACheckpointError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {reason})") from None
    while isinstance(checkpoint, dict):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(checkpoint.get(key), dict)), None)
        if wrapper is None:
            break
        checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f"{path} does not hold a state dict of tensors")
    state_dict = {}
    for key, value in checkpoint.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        state_dict[key] = value
    return state_dict


def convert_state_dict(official: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map official names to ours. Returns (converted, unexpected official keys, dropped keys)."""
    converted, unexpected, dropped = {}, [], []
    has_norm_f = "norm_f.weight" in official
    for key, value in official.items():
        if key.startswith(DROPPED_PREFIXES):
            dropped.append(key)
            continue
        if key == "norm.weight" and not has_norm_f:  # masked-pretraining files call the final norm `norm`
            key = "norm_f.weight"
        if key in _DIRECT:
            target = _DIRECT[key]
        elif match := _LAYER.match(key):
            target = f"stretchysnake.layers.{match.group(1)}.{match.group(2)}"
        else:
            unexpected.append(key)
            continue
        if target.endswith("patch_embeddings.weight") and value.dim() == 4:  # image checkpoint: (D, C, p, p)
            value = value.unsqueeze(2)
        converted[target] = value
    return converted, unexpected, dropped


def config_from_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> StretchySnakeConfig:
    """Read the architecture off the converted tensors; `overrides` (e.g. num_labels, id2label) win."""
    kernel = state_dict["stretchysnake.embeddings.patch_embeddings.weight"]  # (D, C, 1, p, p)
    if kernel.shape[2] != 1:
        raise ConversionError(
            f"its patch embedding spans {kernel.shape[2]} frames (a tubelet kernel of shape "
            f"{tuple(kernel.shape)}), and StretchySnake embeds each frame on its own, as VideoMamba's released video "
            f"checkpoints do (kernel_size=1): convert one of those (the model zoo in the README)")
    positions = state_dict["stretchysnake.embeddings.position_embeddings"].shape[1] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise ConversionError(f"pos_embed holds {positions} patch positions, not a square grid")
    layers = {int(key.split(".")[2]) for key in state_dict if key.startswith("stretchysnake.layers.")}
    mixer = "stretchysnake.layers.0.mixer."
    found = {
        "hidden_size": kernel.shape[0],
        "num_channels": kernel.shape[1],
        "patch_size": kernel.shape[-1],
        "image_size": grid * kernel.shape[-1],
        "num_hidden_layers": max(layers) + 1 if layers else 0,
        "expand": state_dict[mixer + "in_proj.weight"].shape[0] // (2 * kernel.shape[0]),
        "state_size": state_dict[mixer + "A_log"].shape[1],
        "conv_kernel": state_dict[mixer + "conv1d.weight"].shape[-1],
        "time_step_rank": state_dict[mixer + "dt_proj.weight"].shape[1],
    }
    temporal = state_dict.get("stretchysnake.embeddings.temporal_position_embeddings")
    if temporal is not None:
        found["num_frames"] = temporal.shape[1]
    if "classifier.weight" in state_dict:
        found["num_labels"] = state_dict["classifier.weight"].shape[0]
    return StretchySnakeConfig(**{**found, **overrides})


def convert_checkpoint(
    checkpoint_path: str | Path, output_dir: str | Path | None = None, **config_overrides
) -> StretchySnakeForVideoClassification:
    """Convert, check every key, and (when `output_dir` is given) save a Hub-style folder with the video
    processor beside the model."""
    official = load_official_state_dict(checkpoint_path)
    converted, unexpected, dropped = convert_state_dict(official)
    if unexpected:
        raise ConversionError(f"Checkpoint keys that map to no StretchySnake weight: {sorted(unexpected)}")
    if dropped:
        logger.info("Dropped %d keys not used for classification: %s", len(dropped), sorted(dropped)[:5])
    try:
        config = config_from_state_dict(converted, **config_overrides)
    except ConversionError as error:
        raise ConversionError(f"{checkpoint_path}: {error}") from None
    new_head = "classifier.weight" in converted and converted["classifier.weight"].shape[0] != config.num_labels
    if new_head:  # a different label set asked for: start a fresh head
        for key in HEAD_TARGETS:
            converted.pop(key)
    model = StretchySnakeForVideoClassification(config)
    try:
        result = model.load_state_dict(converted, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ConversionError(str(error)) from error
    allowed_missing = set(OPTIONAL_TARGETS)
    if "num_labels" in config_overrides or new_head:
        allowed_missing |= set(HEAD_TARGETS)
    missing = [key for key in result.missing_keys if key not in allowed_missing]
    if missing:
        raise ConversionError(
            f"Model weights absent from the checkpoint: {sorted(missing)}"
            + (" (pass num_labels to start a new classification head)" if set(missing) & set(HEAD_TARGETS) else "")
        )
    if result.unexpected_keys:
        raise ConversionError(f"Converted keys the model does not have: {sorted(result.unexpected_keys)}")
    for key in result.missing_keys:
        logger.warning("%s is not in the checkpoint and keeps its fresh initialisation", key)
    if output_dir is not None:
        save_with_processor(model, output_dir)
    return model


def name_detected_labels(model, filename: str) -> str | None:
    """Give a converted K400 or SSv2 head its class names (recognised from its size and the file name); returns
    the label set's name, or None (the config keeps LABEL_0 ...)."""
    num_labels = model.config.num_labels if model.config.num_labels > 0 else None
    label_set = detect_label_set(num_labels, filename)
    if label_set is not None:
        id2label = dict(enumerate(label_names(label_set)))
        model.config.id2label = id2label
        model.config.label2id = {name: index for index, name in id2label.items()}
        logger.info("%s: %d-class head, label names of %s", filename, num_labels, label_set)
    return label_set


def save_with_processor(model, output_dir: str | Path) -> None:
    """save_pretrained plus the video processor at the model's base frames and resolution, so pipeline() works."""
    from .video_processing_stretchysnake import StretchySnakeVideoProcessor

    model.save_pretrained(output_dir)
    StretchySnakeVideoProcessor(num_frames=model.config.num_frames,
                                resolution=model.config.image_size).save_pretrained(output_dir)


if __name__ == "__main__":  # `python -m modeling_stretchysnake.convert_videomamba_checkpoint`: the console script
    from modeling_stretchysnake.pretrained import convert_cli

    convert_cli()
