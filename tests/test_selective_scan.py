import logging
import math

import pytest
import torch

import importlib

scan_module = importlib.import_module("modeling_stretchysnake.selective_scan")
from modeling_stretchysnake.selective_scan import (
    resolve_scan_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)


def scan_inputs(batch=2, d_inner=6, length=37, n=4, dtype=torch.float64, delta_scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    dt = torch.exp(torch.rand(d_inner, generator=generator, dtype=dtype) * math.log(100) + math.log(1e-3))
    return dict(
        u=randn(batch, d_inner, length),
        delta=randn(batch, d_inner, length) * delta_scale,
        A=-torch.exp(randn(d_inner, n)),
        B=randn(batch, n, length),
        C=randn(batch, n, length),
        D=randn(d_inner),
        z=randn(batch, d_inner, length),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),
        delta_softplus=True,
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_chunked_matches_reference_forward(dtype, tol, chunk_size):
    inputs = scan_inputs(dtype=dtype)
    expected = selective_scan_reference(**inputs)
    actual = selective_scan_chunked(**inputs, chunk_size=chunk_size)
    assert actual.dtype == dtype
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_chunked_matches_reference_without_optional_terms():
    inputs = scan_inputs()
    for name in ("D", "z", "delta_bias"):
        inputs[name] = None
    inputs["delta_softplus"] = False
    inputs["delta"] = inputs["delta"].abs()
    torch.testing.assert_close(selective_scan_chunked(**inputs), selective_scan_reference(**inputs))


def test_chunked_splits_chunks_with_strong_decay():
    # delta * A reaches hundreds per chunk: exp(-S) would overflow float32 without splitting.
    inputs = scan_inputs(dtype=torch.float32, delta_scale=30.0, length=50)
    expected = selective_scan_reference(**inputs)
    actual = selective_scan_chunked(**inputs, chunk_size=50)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_chunked_matches_reference_gradients(dtype, tol):
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    grads = []
    for fn in (selective_scan_reference, selective_scan_chunked):
        inputs = scan_inputs(dtype=dtype, length=23)
        for name in names:
            inputs[name].requires_grad_(True)
        weights = torch.linspace(-1, 1, 23, dtype=dtype)
        (fn(**inputs) * weights).sum().backward()
        grads.append([inputs[name].grad for name in names])
    for name, expected, actual in zip(names, *grads):
        scale = expected.abs().max().clamp(min=1.0)
        assert (actual - expected).abs().max() / scale < tol, name


def test_half_precision_inputs_keep_their_dtype():
    inputs = scan_inputs(dtype=torch.float32)
    inputs = {k: (v.bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    out = selective_scan_chunked(**inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), selective_scan_reference(**inputs).float(), rtol=2e-2, atol=2e-2)


def test_backend_resolution_on_cpu(monkeypatch):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    cpu = torch.device("cpu")
    assert resolve_scan_backend("auto", cpu) == "chunked"
    assert resolve_scan_backend("reference", cpu) == "reference"
    monkeypatch.setenv(scan_module.SCAN_BACKEND_ENV, "reference")
    assert resolve_scan_backend("chunked", cpu) == "reference"
    monkeypatch.setenv(scan_module.SCAN_BACKEND_ENV, "nonsense")
    with pytest.raises(ValueError, match="Unknown scan backend"):
        resolve_scan_backend("auto", cpu)


def test_mamba_ssm_backend_refuses_cpu_tensors(monkeypatch):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    with pytest.raises(RuntimeError, match="mamba"):
        resolve_scan_backend("mamba_ssm", torch.device("cpu"))


def test_dispatch_uses_the_named_backend(monkeypatch):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    calls = []
    monkeypatch.setattr(scan_module, "selective_scan_reference", lambda *a: calls.append("reference") or a[0])
    inputs = scan_inputs()
    selective_scan(**inputs, backend="reference")
    assert calls == ["reference"]


def test_backend_is_logged_once(monkeypatch, caplog):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    monkeypatch.setattr(scan_module, "_logged_backends", set())
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        for _ in range(3):
            resolve_scan_backend("chunked", torch.device("cpu"))
    assert sum("backend: chunked" in record.message for record in caplog.records) == 1


@pytest.mark.parametrize("a_scale", [1e4, 30.0])
def test_extreme_decay_is_finite_and_matches_reference_with_gradients(a_scale):
    # a_scale 1e4: thousands of log-decay per step (length-1 chunks); 30: chunks close to the split limit.
    names = ("u", "delta", "A", "B", "C")
    results = []
    for fn in (selective_scan_reference, selective_scan_chunked):
        inputs = scan_inputs(dtype=torch.float64, length=40, seed=3)
        inputs["A"] = inputs["A"] * a_scale
        for name in names:
            inputs[name] = inputs[name].float().requires_grad_(True)
        for name in ("D", "z", "delta_bias"):
            inputs[name] = inputs[name].float()
        out = fn(**inputs)
        (out * 100).sum().backward()
        results.append((out.detach(), [inputs[name].grad for name in names]))
    (ref_out, ref_grads), (out, grads) = results
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    for name, g, r in zip(names, grads, ref_grads):
        assert (g - r).abs().max() / r.abs().max().clamp(min=1.0) < 1e-3, name


def test_decay_concentrated_in_one_half_of_a_chunk_stays_finite():
    # A chunk's total log-decay (96) may be modest while nearly all of it sits before the chunk's middle step;
    # the closed form then needs exp(~90), past float32's range. This produced NaN losses in training.
    generator = torch.Generator().manual_seed(0)
    batch, d_inner, n, length = 2, 3, 4, 32
    delta = torch.full((batch, d_inner, length), 1e-3)
    delta[..., : length // 2] = 6.0
    base = dict(u=torch.randn(batch, d_inner, length, generator=generator), delta=delta, A=-torch.ones(d_inner, n),
                B=torch.randn(batch, n, length, generator=generator), C=torch.randn(batch, n, length, generator=generator))
    results = []
    for fn, kwargs in ((selective_scan_reference, {}), (selective_scan_chunked, {"chunk_size": length})):
        inputs = {name: value.clone().requires_grad_(True) for name, value in base.items()}
        out = fn(**inputs, **kwargs)
        out.sum().backward()
        results.append((out.detach(), [value.grad for value in inputs.values()]))
    (ref_out, ref_grads), (out, grads) = results
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-3)
