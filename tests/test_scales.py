import collections

import pytest

from modeling_stretchysnake.training.scales import VARIANTS, Scale, ScaleSampler, divisor_patches


def test_divisor_patches_example_from_the_design():
    assert divisor_patches(96) == [12, 16, 24, 32, 48]


@pytest.mark.parametrize(
    "variant,resolutions,patches,grids",
    [
        ("temporal", {224}, {16}, {14}),
        ("static_patches", {96, 128, 224, 384}, {16}, {6, 8, 14, 24}),
        ("flexivit", {240}, {8, 10, 12, 15, 16, 20, 24, 30, 40, 48}, {30, 24, 20, 16, 15, 12, 10, 8, 6, 5}),
        ("static_tokens", {98, 126, 224, 392}, {7, 9, 16, 28}, {14}),
    ],
)
def test_variants_draw_what_the_table_says(variant, resolutions, patches, grids):
    sampler = ScaleSampler(variant, seed=3)
    draws = [sampler.sample(step) for step in range(600)]
    assert {d.resolution for d in draws} == resolutions
    assert {d.patch_size for d in draws} == patches
    assert {d.grid for d in draws} == grids
    assert {d.frames for d in draws} == {8, 16, 32, 64}
    assert all(d.resolution % d.patch_size == 0 for d in draws)


def test_flex_all_draws_divisors_of_each_resolution():
    draws = [ScaleSampler("flex_all").sample(step) for step in range(800)]
    by_resolution = collections.defaultdict(set)
    for d in draws:
        by_resolution[d.resolution].add(d.patch_size)
    assert by_resolution[96] == {12, 16, 24, 32, 48}
    assert all(r % p == 0 for r, ps in by_resolution.items() for p in ps)


def test_same_step_same_scale_on_every_rank_and_seed_matters():
    rank0, rank1 = ScaleSampler("static_tokens", seed=7), ScaleSampler("static_tokens", seed=7)
    assert [rank0.sample(s) for s in range(50)] == [rank1.sample(s) for s in range(50)]
    other = ScaleSampler("static_tokens", seed=8)
    assert [rank0.sample(s) for s in range(50)] != [other.sample(s) for s in range(50)]


def test_custom_sets_and_all_scales():
    sampler = ScaleSampler("static_tokens", frames=(4, 8), resolutions=(56, 112))
    assert set(sampler.all_scales()) == {Scale(f, r, r // 14) for f in (4, 8) for r in (56, 112)}
    assert str(Scale(8, 112, 8)) == "8x112/p8"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(variant="nope"), "Unknown flexible-training variant"),
        (dict(variant="static_tokens", resolutions=(100,)), "multiple of the grid"),
        (dict(variant="static_patches", resolutions=(100,)), "do not divide"),
        (dict(variant="temporal", resolutions=(112, 224)), "one resolution"),
    ],
)
def test_invalid_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScaleSampler(**kwargs)


def test_all_variant_names():
    assert VARIANTS == ("temporal", "static_patches", "flexivit", "flex_all", "static_tokens")
