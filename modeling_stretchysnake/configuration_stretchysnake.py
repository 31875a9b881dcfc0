"""StretchySnake configuration: every hyper-parameter of the any-scale VideoMamba."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

KERNEL_RESIZE_MODES = ("bicubic", "pi")
SCALE_MODES = ("static_tokens", "static_patches")
BASE_IMAGE_SIZE, BASE_PATCH_SIZE = 224, 16  # VideoMamba's: a 14 x 14 base token grid
BASE_GRID_SIZE = BASE_IMAGE_SIZE // BASE_PATCH_SIZE
POOLING_MODES = ("cls", "mean")
CLS_POSITIONS = ("start", "ends")
POSITION_EMBEDDING_INITS = ("trunc_normal", "sincos")
PROJECTION_INITS = ("trunc_normal", "kaiming_uniform")

# Named sizes from VideoMamba: hidden size x depth.
STRETCHYSNAKE_PRESETS = {
    "tiny": {"hidden_size": 192, "num_hidden_layers": 24},
    "small": {"hidden_size": 384, "num_hidden_layers": 24},
    "middle": {"hidden_size": 576, "num_hidden_layers": 32},
}


def static_tokens_patch_size(height: int, width: int, grid: int) -> int:
    """static_tokens' patch: ceil(shorter side / grid), so the shorter side gets `grid` tokens when it is a multiple
    of it and at most that otherwise (e.g. 392 px with a 14-grid: patch 28)."""
    return math.ceil(min(height, width) / grid)


class StretchySnakeConfig(PretrainedConfig):
    r"""
    Configuration of a StretchySnake model (VideoMamba backbone that runs at any frames x resolution).

    Args:
        hidden_size (`int`, defaults to 192): width D of the residual stream.
        num_hidden_layers (`int`, defaults to 24): number of bidirectional Mamba blocks.
        state_size (`int`, defaults to 16): SSM state size N (mamba's `d_state`).
        conv_kernel (`int`, defaults to 4): causal depthwise conv width (mamba's `d_conv`).
        expand (`int`, defaults to 2): inner width is `expand * hidden_size`.
        time_step_rank (`int` or `"auto"`): rank of the dt projection; `"auto"` is `ceil(hidden_size / 16)`.
        time_step_min, time_step_max, time_step_floor (`float`): dt initialisation range (log-uniform) and floor.
        image_size (`int`, defaults to 224): base resolution the spatial position embedding is stored at.
        patch_size (`int`, defaults to 16): base patch size the patch-embedding kernel is stored at.
        num_frames (`int`, defaults to 8): number of frames the temporal position embedding is stored at.
        num_channels (`int`, defaults to 3): input channels.
        drop_path_rate (`float`, defaults to 0.1): stochastic depth, linearly increasing over the blocks.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout on the embeddings.
        classifier_dropout (`float`, defaults to 0.0): dropout before the classification head.
        rms_norm_eps (`float`, defaults to 1e-5): RMSNorm epsilon.
        residual_in_fp32 (`bool`, defaults to `True`): keep the residual stream in float32.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal initialisations.
        kernel_resize_mode (`str`, defaults to `"bicubic"`): how the patch kernel is resized per call:
            `"bicubic"` (bicubic + antialias, the paper's choice) or `"pi"` (FlexiViT pseudo-inverse resize).
        scale_mode (`str`, defaults to `"static_tokens"`): how a call picks its patch size when none is given:
            `"static_tokens"` keeps the base token grid (patch = shorter side / (image_size / patch_size));
            `"static_patches"` keeps the base patch size (the grid grows with the resolution).
        scan_backend (`str`, defaults to `"auto"`): `"auto"` (the fastest available for the device: numba on CPU;
            mamba-ssm, else Triton on CUDA; else chunked), `"numba"`, `"triton"`, `"mamba_ssm"`, `"chunked"` or
            `"reference"`; the environment variable `STRETCHYSNAKE_SCAN_BACKEND` overrides it.
        scan_chunk_size (`int`, defaults to 16): chunk length of the pure-PyTorch chunked scan.
        fused_mixer (`bool`, defaults to `True`): run each block's whole bidirectional mixer (conv, projections,
            both scans, gate and out_proj) as one op where the scan backend has one: numba and Triton (this
            package's kernels; the backward direction is scanned in reverse, never flipped) and mamba-ssm (its
            `mamba_inner_fn` per direction). Autograd then keeps only in_proj's output and the scans' state
            checkpoints and recomputes the rest in backward. `False` runs conv, projections and each scan as
            separate ops (the only way for the chunked and reference scans).
        pooling (`str`, defaults to `"cls"`): what `pooler_output` (and so the classifier) reads: `"cls"`, the
            normalised CLS token (VideoMamba; see `cls_position`), or `"mean"`, the mean of the normalised patch
            tokens.
        cls_position (`str`, defaults to `"start"`): where the CLS token sits: `"start"`, VideoMamba's single token
            before the patch tokens, or `"ends"`, the same token (same parameters) both before and after them, the
            two outputs averaged for `pooler_output`. A bidirectional scan ends at both ends of the sequence: a
            token at the start reads the whole clip only through the backward scan, most strongly its first frame;
            the second token reads the forward scan, most strongly the last frame (the readout of a bidirectional
            RNN classifier). The same parameters serve both, so VideoMamba checkpoints load either way.
        position_embedding_init (`str`, defaults to `"trunc_normal"`): how a fresh model's spatial position
            embedding starts: `"trunc_normal"` (std `initializer_range`, VideoMamba) or `"sincos"` (the 2-D sin-cos
            table of MAE / VideoMAE, amplitude 1; still learned). Loaded weights replace it either way.
        projection_init (`str`, defaults to `"trunc_normal"`): how a fresh model's mixer input projections
            (`in_proj`, `x_proj`, `x_proj_b`) start: `"trunc_normal"` (std `initializer_range`, VideoMamba) or
            `"kaiming_uniform"` (PyTorch's default Linear init, which Mamba keeps). At small widths the first makes
            the SSM's B, C and input so small that, at init, a token hears almost nothing beyond the conv window
            (bench/RESULTS.md, learning study).
        cascade (`dict`, *optional*): a fitted confidence cascade over scales (`cascade.ScaleCascade.to_dict()`:
            scales cheapest first, per-stage thresholds, confidence kind, how evidence combines, costs), written by
            `recipes/calibrate_cascade.py`; the pipeline (`cascade=True`) and the recipes' `--cascade` use it.
    """

    model_type = "stretchysnake"

    def __init__(
        self,
        hidden_size: int = 192,
        num_hidden_layers: int = 24,
        state_size: int = 16,
        conv_kernel: int = 4,
        expand: int = 2,
        time_step_rank: int | str = "auto",
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        image_size: int = BASE_IMAGE_SIZE,
        patch_size: int = BASE_PATCH_SIZE,
        num_frames: int = 8,
        num_channels: int = 3,
        drop_path_rate: float = 0.1,
        hidden_dropout_prob: float = 0.0,
        classifier_dropout: float = 0.0,
        rms_norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
        initializer_range: float = 0.02,
        kernel_resize_mode: str = "bicubic",
        scale_mode: str = "static_tokens",
        scan_backend: str = "auto",
        scan_chunk_size: int = 16,
        fused_mixer: bool = True,
        pooling: str = "cls",
        cls_position: str = "start",
        position_embedding_init: str = "trunc_normal",
        projection_init: str = "trunc_normal",
        cascade: dict | None = None,
        **kwargs,
    ):
        if kernel_resize_mode not in KERNEL_RESIZE_MODES:
            raise ValueError(f"kernel_resize_mode must be one of {KERNEL_RESIZE_MODES}, got {kernel_resize_mode!r}")
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if cls_position not in CLS_POSITIONS:
            raise ValueError(f"cls_position must be one of {CLS_POSITIONS}, got {cls_position!r}")
        if position_embedding_init not in POSITION_EMBEDDING_INITS:
            raise ValueError(f"position_embedding_init must be one of {POSITION_EMBEDDING_INITS}, "
                             f"got {position_embedding_init!r}")
        if projection_init not in PROJECTION_INITS:
            raise ValueError(f"projection_init must be one of {PROJECTION_INITS}, got {projection_init!r}")
        if image_size % patch_size != 0:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.state_size = state_size
        self.conv_kernel = conv_kernel
        self.expand = expand
        self.intermediate_size = expand * hidden_size
        self.time_step_rank = math.ceil(hidden_size / 16) if time_step_rank == "auto" else int(time_step_rank)
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.num_channels = num_channels
        self.drop_path_rate = drop_path_rate
        self.hidden_dropout_prob = hidden_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.rms_norm_eps = rms_norm_eps
        self.residual_in_fp32 = residual_in_fp32
        self.initializer_range = initializer_range
        self.kernel_resize_mode = kernel_resize_mode
        self.scale_mode = scale_mode
        self.scan_backend = scan_backend
        self.scan_chunk_size = scan_chunk_size
        self.fused_mixer = fused_mixer
        self.pooling = pooling
        self.cls_position = cls_position
        self.position_embedding_init = position_embedding_init
        self.projection_init = projection_init
        self.cascade = cascade
        super().__init__(**kwargs)
        if self.id2label and not getattr(self, "label2id", None):
            self.label2id = {label: int(index) for index, label in self.id2label.items()}

    @property
    def grid_size(self) -> int:
        """Side of the base token grid (14 for 224 px and patch 16)."""
        return self.image_size // self.patch_size

    def patch_size_for(self, height: int, width: int) -> int:
        """The patch size of a call at height x width under `scale_mode`, the one home of the rule (the model,
        the scale samplers and the recipes use it): static_patches keeps `patch_size`; static_tokens gives the
        shorter side the base grid (`static_tokens_patch_size`)."""
        if self.scale_mode == "static_patches":
            return self.patch_size
        return static_tokens_patch_size(height, width, self.grid_size)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "StretchySnakeConfig":
        """A config for a named size: `tiny` (192x24), `small` (384x24) or `middle` (576x32)."""
        if name not in STRETCHYSNAKE_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(STRETCHYSNAKE_PRESETS)}")
        return cls(**{**STRETCHYSNAKE_PRESETS[name], **kwargs})
