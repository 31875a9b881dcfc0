"""StretchySnake: a VideoMamba backbone that runs at any number of frames and any resolution.

Parameters are stored at base size (patch 16, 14x14 grid, `num_frames` frames); every forward resizes the
patch kernel and position embeddings to the call's scale, so one set of weights serves every scale and the
gradients of all scales land on the same base weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_stretchysnake import StretchySnakeConfig
from .resizing import resample_spatial_pos_embed, resample_temporal_pos_embed, resize_patch_kernel
from .bidirectional_mixer import bidirectional_mixer_fused, bidirectional_mixer_mamba_ssm
from .selective_scan import load_mamba_inner_fn, resolve_scan_backend, selective_scan
from .selective_scan_fused import compute_dtype

logger = logging.getLogger(__name__)


@dataclass
class StretchySnakeModelOutput(ModelOutput):
    """
    last_hidden_state (`torch.FloatTensor` of shape `(batch, 1 + frames * h * w, hidden_size)`):
        the normalised token sequence; index 0 is the CLS token (with `config.cls_position="ends"` the last index
        is the second CLS token, and the length is 2 + frames * h * w).
    pooler_output (`torch.FloatTensor` of shape `(batch, hidden_size)`): the normalised CLS token, or with
        `config.pooling="mean"` the mean of the normalised patch tokens.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): the embeddings and the residual stream after each
        block, returned with `output_hidden_states=True`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class StretchySnakeVideoClassifierOutput(ModelOutput):
    """
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*): cross-entropy loss, returned when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch, num_labels)`): classification scores.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): as in `StretchySnakeModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def drop_path(hidden: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples' branch outputs with probability `rate`, rescale the rest."""
    if rate == 0.0 or not training:
        return hidden
    keep = 1.0 - rate
    mask = hidden.new_empty((hidden.shape[0],) + (1,) * (hidden.dim() - 1)).bernoulli_(keep)
    return hidden * mask / keep


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm that keeps only its input and the (…, 1) inverse RMS for backward and recomputes the normalised
    tokens there: plain autograd would also keep them, one more (…, hidden) tensor per block."""

    @staticmethod
    def forward(ctx, hidden, weight, eps):
        normalised, inverse_rms = _rms_normalise(hidden, eps)
        ctx.save_for_backward(hidden, weight, inverse_rms)
        return (weight * normalised.to(weight.dtype)).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, inverse_rms = ctx.saved_tensors
        normalised = hidden.to(inverse_rms.dtype) * inverse_rms
        grad_out = grad_out.to(inverse_rms.dtype)
        grad_weight = (grad_out * normalised).reshape(-1, normalised.shape[-1]).sum(0)
        grad_normalised = grad_out * weight.to(inverse_rms.dtype)
        projection = (grad_normalised * normalised).mean(-1, keepdim=True)
        grad_hidden = inverse_rms * (grad_normalised - normalised * projection)
        return grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype), None


def _rms_normalise(hidden: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = hidden.to(compute_dtype(hidden))
    inverse_rms = torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
    return hidden * inverse_rms, inverse_rms


class StretchySnakeRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (hidden.requires_grad or self.weight.requires_grad):
            return _RMSNormFunction.apply(hidden, self.weight, self.eps)
        normalised, _ = _rms_normalise(hidden, self.eps)
        return (self.weight * normalised.to(self.weight.dtype)).to(hidden.dtype)


def resolve_patch_size(config: StretchySnakeConfig, height: int, width: int, patch_size: int | None = None) -> int:
    """The patch size a call uses: explicit, else `config.patch_size_for(height, width)` (its scale_mode's rule).
    Frames whose sides the patch does not divide are zero-padded at the bottom and right (see `padded_grid`)."""
    if patch_size is None:
        patch_size = config.patch_size_for(height, width)
    if int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    return int(patch_size)


def padded_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Token grid (rows, columns) of an H x W frame: ceil(H / p) x ceil(W / p), as timm's `dynamic_img_pad`."""
    return math.ceil(height / patch_size), math.ceil(width / patch_size)


def sincos_position_table(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2-D sin-cos position table, row-major (MAE): a quarter of the channels each for
    sin and cos of the row and of the column, at geometric frequencies."""
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                                indexing="ij")
    parts = [f(axis.reshape(-1, 1) * frequencies) for axis in (rows, cols) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=1)
    return F.pad(table, (0, dim - table.shape[1]))  # dims not divisible by 4: zero-filled tail


class StretchySnakePatchEmbeddings(nn.Conv3d):
    """The per-frame patch conv, stored at the base patch size and applied at any patch size: the kernel is resized
    to the call's patch size (`config.kernel_resize_mode`). Called as a module, so hooks on it (FSDP's all-gather of
    the input-embedding unit, adapters) see each use of its weights."""

    def __init__(self, config: StretchySnakeConfig):
        p = config.patch_size
        super().__init__(config.num_channels, config.hidden_size, kernel_size=(1, p, p), stride=(1, p, p))
        self.config = config

    def forward(self, pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
        # pixel_values: (B, C, T, H, W) with H and W multiples of patch_size -> (B, D, T, H/p, W/p)
        # the stored kernel (D, C, 1, P, P) resized to (D, C, 1, p, p)
        kernel = resize_patch_kernel(self.weight, (patch_size, patch_size), self.config.kernel_resize_mode)
        return F.conv3d(pixel_values.to(kernel.dtype), kernel, self.bias, stride=(1, patch_size, patch_size))


class StretchySnakeEmbeddings(nn.Module):
    """Per-frame patch tokens + CLS, with the kernel and position embeddings resized to the call's scale."""

    def __init__(self, config: StretchySnakeConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = StretchySnakePatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + config.grid_size**2, config.hidden_size))
        self.temporal_position_embeddings = nn.Parameter(torch.zeros(1, config.num_frames, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
        # pixel_values: (B, T, C, H, W) -> tokens (B, 1 + T*h*w, D), or (B, 2 + T*h*w, D) with CLS at both ends
        batch, frames, _, height, width = pixel_values.shape
        grid = padded_grid(height, width, patch_size)
        pad_height, pad_width = grid[0] * patch_size - height, grid[1] * patch_size - width
        if pad_height or pad_width:  # zeros are the mean colour after normalisation
            pixel_values = F.pad(pixel_values, (0, pad_width, 0, pad_height))
        patches = self.patch_embeddings(pixel_values.transpose(1, 2), patch_size)  # (B, D, T, h, w)
        tokens = patches.flatten(3).permute(0, 2, 3, 1)  # (B, T, h*w, D)
        base_grid = (self.config.grid_size, self.config.grid_size)
        spatial = resample_spatial_pos_embed(self.position_embeddings[:, 1:], base_grid, grid)  # (1, h*w, D)
        temporal = resample_temporal_pos_embed(self.temporal_position_embeddings, frames)  # (1, T, D)
        tokens = tokens + spatial.unsqueeze(1) + temporal.unsqueeze(2)
        cls = (self.cls_token + self.position_embeddings[:, :1]).expand(batch, -1, -1)  # (B, 1, D)
        ends = (cls, cls) if self.config.cls_position == "ends" else (cls,)
        return self.dropout(torch.cat([ends[0], tokens.flatten(1, 2), *ends[1:]], dim=1))


class StretchySnakeMixer(nn.Module):
    """Bidirectional Mamba-1 mixer ("v2"): shared in/out projections, a forward SSM over the sequence and a
    backward SSM (`*_b` parameters) over the flipped sequence, their gated outputs summed."""

    def __init__(self, config: StretchySnakeConfig):
        super().__init__()
        self.config = config
        d_inner, n, rank = config.intermediate_size, config.state_size, config.time_step_rank
        self.in_proj = nn.Linear(config.hidden_size, 2 * d_inner, bias=False)
        self.out_proj = nn.Linear(d_inner, config.hidden_size, bias=False)
        for suffix in ("", "_b"):
            conv = nn.Conv1d(
                d_inner, d_inner, config.conv_kernel, groups=d_inner, padding=config.conv_kernel - 1, bias=True
            )
            setattr(self, f"conv1d{suffix}", conv)
            setattr(self, f"x_proj{suffix}", nn.Linear(d_inner, rank + 2 * n, bias=False))
            setattr(self, f"dt_proj{suffix}", nn.Linear(rank, d_inner, bias=True))
            a_name = "A_log" if suffix == "" else "A_b_log"
            setattr(self, a_name, nn.Parameter(torch.log(torch.arange(1, n + 1).float().repeat(d_inner, 1))))
            setattr(self, f"D{suffix}", nn.Parameter(torch.ones(d_inner)))

    def _branch(self, x: torch.Tensor, z: torch.Tensor, suffix: str) -> torch.Tensor:
        # x, z: (B, d_inner, L) -> gated SSM output (B, d_inner, L)
        conv, x_proj, dt_proj = (getattr(self, f"{name}{suffix}") for name in ("conv1d", "x_proj", "dt_proj"))
        A_log = self.A_log if suffix == "" else self.A_b_log
        length = x.shape[-1]
        x = F.silu(conv(x)[..., :length])  # causal depthwise conv
        rank, n = self.config.time_step_rank, self.config.state_size
        x_dbl = x_proj(x.transpose(1, 2))  # (B, L, rank + 2N)
        dt, B, C = torch.split(x_dbl, [rank, n, n], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # (B, d_inner, L); bias is added inside the scan
        state_dtype = compute_dtype(x)
        return selective_scan(
            x,
            delta,
            -torch.exp(A_log.to(state_dtype)),
            B.transpose(1, 2),
            C.transpose(1, 2),
            getattr(self, f"D{suffix}").to(state_dtype),
            z=z,
            delta_bias=dt_proj.bias.to(state_dtype),
            delta_softplus=True,
            backend=self.config.scan_backend,
            chunk_size=self.config.scan_chunk_size,
        )

    def _stacked_parameters(self) -> tuple[torch.Tensor, ...]:
        """Both directions' parameters stacked (forward, backward), in the fused op's layout."""
        def pair(first, second):
            return torch.stack([first, second])

        return (
            pair(self.conv1d.weight.squeeze(1), self.conv1d_b.weight.squeeze(1)),  # (2, d_inner, K)
            pair(self.conv1d.bias, self.conv1d_b.bias),
            pair(self.x_proj.weight, self.x_proj_b.weight),  # (2, rank + 2N, d_inner)
            pair(self.dt_proj.weight, self.dt_proj_b.weight),  # (2, d_inner, rank)
            pair(self.dt_proj.bias, self.dt_proj_b.bias),
            -torch.exp(pair(self.A_log, self.A_b_log).to(compute_dtype(self.A_log))),
            pair(self.D, self.D_b),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: (B, L, D)
        xz = self.in_proj(hidden)  # (B, L, 2 * d_inner)
        path = mixer_path(self.config, hidden.device)
        # out_proj joins the fused op when it is a plain Linear (not, say, wrapped by an adapter library)
        fuse_out_proj = type(self.out_proj) is nn.Linear and self.out_proj.bias is None
        out_proj_weight = self.out_proj.weight if fuse_out_proj else None
        if path == "fused":
            out = bidirectional_mixer_fused(xz, *self._stacked_parameters(), out_proj_weight)
        elif path == "mamba_ssm_fused" and fuse_out_proj:
            out = bidirectional_mixer_mamba_ssm(load_mamba_inner_fn(), xz, *self._stacked_parameters(),
                                               out_proj_weight)
        else:
            x, z = xz.transpose(1, 2).chunk(2, dim=1)  # each (B, d_inner, L)
            forward = self._branch(x, z, "")
            backward = self._branch(x.flip(-1), z.flip(-1), "_b").flip(-1)
            return self.out_proj((forward + backward).transpose(1, 2))
        return out if fuse_out_proj else self.out_proj(out)


@torch.compiler.assume_constant_result  # compile / export: decided once while tracing, not traced into
def mixer_path(config: StretchySnakeConfig, device: torch.device) -> str:
    """How a mixer call runs: "fused" (the whole mixer as one op with numba or Triton kernels), "mamba_ssm_fused"
    (mamba-ssm's fused inner function per direction), or "unfused" (conv, projections and one scan call per
    direction as separate autograd ops: the chunked and reference scans, or `config.fused_mixer=False`)."""
    backend = resolve_scan_backend(config.scan_backend, device)
    if not config.fused_mixer:
        return "unfused"
    if backend in ("numba", "triton"):
        return "fused"
    if backend == "mamba_ssm" and load_mamba_inner_fn() is not None:
        return "mamba_ssm_fused"
    return "unfused"


class StretchySnakeBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: residual + drop_path(mixer(norm(residual))), the residual kept in fp32."""

    def __init__(self, config: StretchySnakeConfig, drop_path_rate: float):
        super().__init__()
        self.norm = StretchySnakeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mixer = StretchySnakeMixer(config)
        self.drop_path_rate = drop_path_rate

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        hidden = self.mixer(self.norm(residual.to(self.norm.weight.dtype)))
        return residual + drop_path(hidden, self.drop_path_rate, self.training).to(residual.dtype)


def unsharded_class(module: nn.Module) -> type:
    """The class of `module` before FSDP2's `fully_shard` replaced it with a generated `FSDP<Name>` subclass."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2 shards nothing
        return type(module)
    return next(cls for cls in type(module).__mro__ if not issubclass(cls, FSDPModule))


class StretchySnakePreTrainedModel(PreTrainedModel):
    config: StretchySnakeConfig
    config_class = StretchySnakeConfig
    base_model_prefix = "stretchysnake"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["StretchySnakeBlock"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        # FSDP2 gives a sharded model a generated class, FSDP<Name>, defined in torch: the saved code and auto_map
        # must name the class it wraps, so that class is put back for the save (FSDP2 swaps classes the same way).
        own_class = unsharded_class(self)
        if own_class is not type(self):
            sharded_class, self.__class__ = self.__class__, own_class
            try:
                return self.save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.__class__ = sharded_class
        # A saved folder loads through every Auto class without the package (trust_remote_code): features through
        # AutoModel, the classifier through AutoModelForVideoClassification, whichever class was saved; a
        # classifier also names its pipeline class (this relative import makes transformers save that file too).
        if self._auto_class is not None:
            module = self.__class__.__module__.split(".")[-1]
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                    **{auto: f"{module}.{name}" for auto, name in _AUTO_CLASSES.items()}}
            if isinstance(self, StretchySnakeForVideoClassification):
                from .pipeline_stretchysnake import CUSTOM_PIPELINES

                self.config.custom_pipelines = CUSTOM_PIPELINES
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self._save_default_processor(save_directory, kwargs.get("is_main_process", True))
        return result

    def _save_default_processor(self, save_directory, is_main_process: bool) -> None:
        """A folder without a video processor gets one at the model's base scale (its stored frames and resolution),
        so `pipeline("video-classification", model=folder)` and AutoVideoProcessor work on it: a processor saved
        into the folder afterwards (as the recipes and the README do) replaces it, one saved before is kept."""
        import os

        from transformers.utils import VIDEO_PROCESSOR_NAME

        folder = os.fspath(save_directory)
        if not is_main_process or os.path.exists(os.path.join(folder, VIDEO_PROCESSOR_NAME)):
            return
        from .video_processing_stretchysnake import StretchySnakeVideoProcessor

        StretchySnakeVideoProcessor(num_frames=self.config.num_frames,
                                    resolution=self.config.image_size).save_pretrained(folder)
        logger.info("saved a video processor at the model's base scale (%d frames, %d px) beside it, for pipeline(): "
                    "save your own into %s to replace it", self.config.num_frames, self.config.image_size, folder)

    @torch.no_grad()
    def _init_weights(self, module):
        """VideoMamba's initialisation; the dt projections follow Mamba's log-uniform dt init (see README)."""
        std = self.config.initializer_range
        if isinstance(module, StretchySnakeEmbeddings):
            # The patch conv keeps PyTorch's default init, as in VideoMamba.
            init.kaiming_uniform_(module.patch_embeddings.weight, a=math.sqrt(5))
            fan_in = module.patch_embeddings.weight[0].numel()
            init.uniform_(module.patch_embeddings.bias, -(fan_in**-0.5), fan_in**-0.5)
            init.zeros_(module.cls_token)
            init.trunc_normal_(module.position_embeddings, std=std)
            if self.config.position_embedding_init == "sincos":  # the CLS slot keeps its trunc-normal value
                table = sincos_position_table(self.config.grid_size, self.config.hidden_size)
                init.copy_(module.position_embeddings[0, 1:], table.to(module.position_embeddings.dtype))
            init.zeros_(module.temporal_position_embeddings)
        elif isinstance(module, StretchySnakeMixer):
            config = self.config
            for linear in (module.in_proj, module.x_proj, module.x_proj_b):
                if config.projection_init == "kaiming_uniform":
                    init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
                else:
                    init.trunc_normal_(linear.weight, std=std)
            # GPT-2 style rescale of the residual-branch output projection (n_residuals_per_layer = 1).
            init.kaiming_uniform_(module.out_proj.weight, a=math.sqrt(5))
            init.copy_(module.out_proj.weight, module.out_proj.weight / math.sqrt(config.num_hidden_layers))
            for conv in (module.conv1d, module.conv1d_b):
                init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
                bound = conv.weight[0].numel() ** -0.5
                init.uniform_(conv.bias, -bound, bound)
            a_init = torch.log(torch.arange(1, config.state_size + 1, dtype=torch.float32))
            dt_std = config.time_step_rank**-0.5
            for dt_proj, a_log, d in ((module.dt_proj, module.A_log, module.D), (module.dt_proj_b, module.A_b_log, module.D_b)):
                init.uniform_(dt_proj.weight, -dt_std, dt_std)
                dt = torch.exp(
                    torch.rand(config.intermediate_size)
                    * (math.log(config.time_step_max) - math.log(config.time_step_min))
                    + math.log(config.time_step_min)
                ).clamp(min=config.time_step_floor)
                init.copy_(dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
                init.copy_(a_log, a_init.expand_as(a_log))
                init.ones_(d)
        elif isinstance(module, StretchySnakeRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, nn.Linear) and module is getattr(self, "classifier", None):
            init.trunc_normal_(module.weight, std=std)
            init.zeros_(module.bias)


class StretchySnakeModel(StretchySnakePreTrainedModel):
    def __init__(self, config: StretchySnakeConfig):
        super().__init__(config)
        self.embeddings = StretchySnakeEmbeddings(config)
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear stochastic depth
        self.layers = nn.ModuleList(StretchySnakeBlock(config, rate) for rate in rates)
        self.norm_f = StretchySnakeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def _check_pixel_values(self, pixel_values) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if pixel_values.dim() != 5:
            raise ValueError(
                "pixel_values must have shape (batch, frames, channels, height, width); "
                f"got {pixel_values.dim()} dimensions {tuple(pixel_values.shape)}"
            )
        batch, frames, channels, height, width = pixel_values.shape
        if channels != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels at dim 2, expected {self.config.num_channels}; "
                "the layout is (batch, frames, channels, height, width)"
            )
        if min(batch, frames, height, width) < 1:
            raise ValueError(f"pixel_values has an empty dimension: {tuple(pixel_values.shape)}")
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values must be normalised float frames, got dtype {pixel_values.dtype}; raw {pixel_values.dtype}"
                " frames go through StretchySnakeVideoProcessor first (it rescales 0..255 to 0..1 and normalises)"
            )

    def get_input_embeddings(self) -> nn.Module:
        """The per-frame patch-embedding conv, stored at the base patch size (as in-tree vision models)."""
        return self.embeddings.patch_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.patch_embeddings = value

    def forward(
        self,
        pixel_values: torch.Tensor,
        patch_size: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> StretchySnakeModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, frames, channels, height, width)`):
            normalised frames (the processor's output), any frames >= 1 and any height, width >= 1; sides the
            patch size does not divide are zero-padded at the bottom and right to ceil(side / patch) tokens.
        patch_size (`int`, *optional*): patch size for this call; by default from `config.scale_mode`.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_pixel_values(pixel_values)
        height, width = pixel_values.shape[-2:]
        patch_size = resolve_patch_size(self.config, height, width, patch_size)

        residual = self.embeddings(pixel_values, patch_size)
        if self.config.residual_in_fp32:
            residual = residual.float()
        all_hidden = (residual,) if output_hidden_states else None
        for layer in self.layers:
            residual = layer(residual)
            if output_hidden_states:
                all_hidden += (residual,)
        last_hidden = self.norm_f(residual.to(self.norm_f.weight.dtype))
        pooled = pool(last_hidden, self.config)
        if not return_dict:
            return tuple(v for v in (last_hidden, pooled, all_hidden) if v is not None)
        return StretchySnakeModelOutput(last_hidden_state=last_hidden, pooler_output=pooled, hidden_states=all_hidden)


def pool(last_hidden: torch.Tensor, config: StretchySnakeConfig) -> torch.Tensor:
    """(B, L, D) normalised tokens -> (B, D): the CLS token(s) or the mean of the patch tokens."""
    ends = config.cls_position == "ends"
    if config.pooling == "mean":
        return last_hidden[:, 1 : last_hidden.shape[1] - ends].mean(dim=1)
    return (last_hidden[:, 0] + last_hidden[:, -1]) / 2 if ends else last_hidden[:, 0]


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: StretchySnakeConfig) -> torch.Tensor:
    """The loss for `config.problem_type`, as transformers' classification heads choose it.

    Unset problem_type: regression for one label; otherwise single-label cross-entropy, with class indices or soft
    targets (batch, num_labels) such as mixup's. Multi-label BCE is used only when asked for by
    `problem_type="multi_label_classification"`, since soft single-label targets have the same shape.
    """
    problem_type = config.problem_type
    if problem_type is None:
        problem_type = "regression" if config.num_labels == 1 else "single_label_classification"
    logits, labels = logits.float(), labels.to(logits.device)
    if problem_type == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.view(-1), labels.float().view(-1))
        return F.mse_loss(logits, labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    if labels.is_floating_point() and labels.dim() == 2:  # soft targets
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1).long())


class StretchySnakeForVideoClassification(StretchySnakePreTrainedModel):
    def __init__(self, config: StretchySnakeConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.stretchysnake = StretchySnakeModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        patch_size: int | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> StretchySnakeVideoClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch,)`, or float `(batch, num_labels)`, *optional*):
            class indices or soft targets (e.g. mixup) for the cross-entropy loss; float targets for
            `problem_type="regression"` (MSE) or 0/1 targets for `"multi_label_classification"` (BCE).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.stretchysnake(
            pixel_values, patch_size=patch_size, output_hidden_states=output_hidden_states, return_dict=True
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.config)
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return StretchySnakeVideoClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


_AUTO_CLASSES = {"AutoModel": "StretchySnakeModel",
                 "AutoModelForVideoClassification": "StretchySnakeForVideoClassification"}

__all__ = [
    "StretchySnakeForVideoClassification",
    "StretchySnakeModel",
    "StretchySnakePreTrainedModel",
]
