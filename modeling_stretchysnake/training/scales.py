"""The five flexible-training variants as scale samplers: one (frames, resolution, patch) per training step.

| variant        | frames | resolution R            | patch p                          | token grid |
|----------------|--------|-------------------------|----------------------------------|------------|
| temporal       | random | fixed 224               | 16                               | 14x14      |
| static_patches | random | {96, 128, 224, 384}     | 16                               | R/16       |
| flexivit       | random | fixed 240               | {8,10,12,15,16,20,24,30,40,48}   | 240/p      |
| flex_all       | random | {96, 128, 224, 384}     | a divisor of R in [R/8, R/2]     | R/p        |
| static_tokens  | random | {98, 126, 224, 392}     | R/14                             | 14x14      |

`ScaleSampler.sample(step)` depends only on (seed, step), so every rank of a distributed run draws the same
scale for the same step without communicating.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from ..configuration_stretchysnake import BASE_GRID_SIZE, static_tokens_patch_size

PAPER_FRAMES = (8, 16, 32, 64)


@dataclass(frozen=True)
class Scale:
    frames: int
    resolution: int
    patch_size: int

    @property
    def grid(self) -> int:
        return self.resolution // self.patch_size

    @property
    def tokens(self) -> int:
        """Patch tokens of one R x R clip at this scale: frames x grid x grid."""
        return self.frames * self.grid**2

    def __str__(self) -> str:
        return f"{self.frames}x{self.resolution}/p{self.patch_size}"


def divisor_patches(resolution: int) -> list[int]:
    """flex_all's patch choices for a resolution: its divisors between R/8 and R/2 (96 -> 12, 16, 24, 32, 48)."""
    return [p for p in range(1, resolution + 1) if resolution % p == 0 and resolution / 8 <= p <= resolution / 2]


VARIANT_DEFAULTS = {
    "temporal": dict(resolutions=(224,), patch_sizes=(16,)),
    "static_patches": dict(resolutions=(96, 128, 224, 384), patch_sizes=(16,)),
    "flexivit": dict(resolutions=(240,), patch_sizes=(8, 10, 12, 15, 16, 20, 24, 30, 40, 48)),
    "flex_all": dict(resolutions=(96, 128, 224, 384), patch_sizes=None),
    "static_tokens": dict(resolutions=(98, 126, 224, 392), patch_sizes=None),
}
VARIANTS = tuple(VARIANT_DEFAULTS)
# The model's scale_mode for each variant: the patch size a call at a new resolution takes when none is given.
SCALE_MODE_OF_VARIANT = {"temporal": "static_patches", "static_patches": "static_patches", "flexivit": "static_tokens",
                         "flex_all": "static_tokens", "static_tokens": "static_tokens"}


class ScaleSampler:
    """Draws the scale of each training step for one variant.

    Args:
        variant: one of `VARIANTS`.
        frames: frame counts to draw from (the paper: 8, 16, 32, 64).
        resolutions: resolutions to draw from (default: the variant's, see the table above).
        patch_sizes: patch sizes to draw from where the variant draws one (static_patches, temporal, flexivit).
        grid: token-grid side of static_tokens (patch = R / grid): the model's `config.grid_size` (default: the
            base grid of the default config, 14).
        seed: the run's seed; with the step it fixes every draw.
    """

    def __init__(
        self,
        variant: str = "static_tokens",
        frames: Sequence[int] = PAPER_FRAMES,
        resolutions: Sequence[int] | None = None,
        patch_sizes: Sequence[int] | None = None,
        grid: int = BASE_GRID_SIZE,
        seed: int = 0,
    ):
        if variant not in VARIANT_DEFAULTS:
            raise ValueError(f"Unknown flexible-training variant {variant!r}; expected one of {VARIANTS}")
        defaults = VARIANT_DEFAULTS[variant]
        self.variant = variant
        self.frames = tuple(frames)
        self.resolutions = tuple(resolutions or defaults["resolutions"])
        self.patch_sizes = tuple(patch_sizes or defaults["patch_sizes"] or ())
        self.grid = grid
        self.seed = seed
        if variant == "temporal" and len(self.resolutions) != 1:
            raise ValueError("the temporal variant keeps one resolution")
        for resolution in self.resolutions:
            patches = self._drawable_patches(resolution)
            # flex_all draws among the given patches that divide each resolution; the others need every one to.
            if not patches or (variant != "flex_all" and len(patches) < len(self._patches_for(resolution))):
                raise ValueError(f"{variant}: patch sizes {self._patches_for(resolution)} do not divide {resolution}")

    def _patches_for(self, resolution: int) -> tuple[int, ...]:
        if self.variant == "static_tokens":
            if resolution % self.grid:
                raise ValueError(f"static_tokens: resolution {resolution} is not a multiple of the grid {self.grid}")
            return (static_tokens_patch_size(resolution, resolution, self.grid),)
        if self.variant == "flex_all":
            return tuple(self.patch_sizes) if self.patch_sizes else tuple(divisor_patches(resolution))
        return self.patch_sizes

    def _drawable_patches(self, resolution: int) -> list[int]:
        """The patch sizes a step at `resolution` draws from: the variant's that divide it."""
        return [p for p in self._patches_for(resolution) if resolution % p == 0]

    def all_scales(self) -> list[Scale]:
        """Every scale this sampler can draw."""
        return [
            Scale(frames, resolution, patch)
            for frames in self.frames
            for resolution in self.resolutions
            for patch in self._drawable_patches(resolution)
        ]

    def distribution(self) -> list[tuple[Scale, float]]:
        """Every scale this sampler can draw, with the probability `sample` draws it."""
        weights: dict[Scale, float] = {}
        for frames in self.frames:
            for resolution in self.resolutions:
                patches = self._drawable_patches(resolution)
                for patch in patches:
                    scale = Scale(frames, resolution, patch)
                    weights[scale] = weights.get(scale, 0.0) + 1 / (len(self.frames) * len(self.resolutions) * len(patches))
        return list(weights.items())

    def sample(self, step: int) -> Scale:
        """The scale of training step `step`; the same on every rank."""
        rng = random.Random(self.seed * 1_000_003 + step)
        frames = rng.choice(self.frames)
        resolution = rng.choice(self.resolutions)
        patch = rng.choice(self._drawable_patches(resolution))
        return Scale(frames, resolution, patch)

    def __repr__(self) -> str:
        return f"ScaleSampler({self.variant!r}, frames={self.frames}, resolutions={self.resolutions}, seed={self.seed})"
