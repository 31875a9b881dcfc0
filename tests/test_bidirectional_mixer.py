"""The fused bidirectional mixer against the unfused one (conv, projections and the sequential reference scan as
separate autograd ops on the flipped sequence): outputs and every gradient, float64 to 1e-10 and float32 to 1e-5,
over L = 1, 2, 33, 150 (across a checkpoint chunk) and a realistic L, batch > 1, CLS at one or both ends; what
autograd keeps; the custom op's registration, torch.compile, thread-count independence; the Triton path under its
interpreter; and the mamba-ssm path's calling convention against a reference of mamba-ssm's ``mamba_inner_fn``."""

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification
from modeling_stretchysnake import modeling_stretchysnake as modeling
from modeling_stretchysnake.bidirectional_mixer import bidirectional_mixer_fused, bidirectional_mixer_mamba_ssm
from modeling_stretchysnake.modeling_stretchysnake import StretchySnakeMixer, mixer_path
from modeling_stretchysnake.selective_scan import selective_scan_reference
from modeling_stretchysnake.selective_scan_fused import CHECKPOINT_EVERY, triton_available

sys.path.insert(0, str(ROOT / "bench"))
from scaling import saved_activation_floats  # noqa: E402  (the benchmark's own count, checked here)


def random_mixer(hidden_size=16, state_size=4, dtype=torch.float64, seed=0, **overrides):
    """A mixer whose parameters are moved off their initial values (so every term matters)."""
    torch.manual_seed(seed)
    config = small_config(hidden_size=hidden_size, state_size=state_size, **overrides)
    mixer = StretchySnakeMixer(config).to(dtype)
    with torch.no_grad():
        for parameter in mixer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return mixer


def unfused_copy(mixer, backend="reference"):
    other = copy.deepcopy(mixer)
    other.config = copy.deepcopy(mixer.config)
    other.config.fused_mixer = False
    other.config.scan_backend = backend
    return other


def outputs_and_gradients(module, hidden):
    hidden = hidden.detach().clone().requires_grad_(True)
    module.zero_grad()
    out = module(hidden)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    grads["hidden"] = hidden.grad.clone()
    return out.detach(), grads


def assert_close_relative(actual, expected, tol):
    assert actual.keys() == expected.keys() if isinstance(actual, dict) else True
    pairs = actual.items() if isinstance(actual, dict) else [("output", actual)]
    for name, value in pairs:
        reference = expected[name] if isinstance(expected, dict) else expected
        assert torch.isfinite(value).all(), name
        error = (value.double() - reference.double()).abs().max() / reference.double().abs().max().clamp(min=1e-30)
        assert error < tol, (name, error.item())


@pytest.mark.parametrize("length", [1, 2, 33, CHECKPOINT_EVERY + 22])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fused_mixer_matches_the_unfused_reference(length, dtype, tol):
    mixer = random_mixer(dtype=dtype)
    assert mixer_path(mixer.config, torch.device("cpu")) == "fused"
    hidden = torch.randn(3, length, 16, dtype=dtype)
    out, grads = outputs_and_gradients(mixer, hidden)
    expected, expected_grads = outputs_and_gradients(unfused_copy(mixer), hidden)
    assert_close_relative(out, expected, tol)
    assert_close_relative(grads, expected_grads, tol)


def test_fused_mixer_at_a_realistic_length():
    # 8 frames x 14 x 14 tokens + CLS at both ends, more than twelve checkpoint chunks; the chunked scan (itself
    # tested against the reference) stands in for the reference's 1570 Python steps.
    mixer = random_mixer(hidden_size=24, state_size=16, dtype=torch.float32)
    hidden = torch.randn(2, 2 + 8 * 196, 24)
    out, grads = outputs_and_gradients(mixer, hidden)
    expected, expected_grads = outputs_and_gradients(unfused_copy(mixer, "chunked"), hidden)
    assert_close_relative(out, expected, 1e-5)
    assert_close_relative(grads, expected_grads, 1e-5)


@pytest.mark.parametrize("cls_position", ["start", "ends"])
def test_whole_model_fused_matches_unfused(cls_position):
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(cls_position=cls_position)).double()
    pixel_values = torch.randn(2, 3, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([0, 2])
    results = []
    for fused in (True, False):
        candidate = copy.deepcopy(model)
        candidate.config.fused_mixer = fused
        candidate.config.scan_backend = "auto" if fused else "reference"
        output = candidate(pixel_values, labels=labels)
        output.loss.backward()
        results.append((output.logits.detach(), {k: p.grad for k, p in candidate.named_parameters()}))
    (actual, grads), (expected, expected_grads) = results
    assert_close_relative(actual, expected, 1e-10)
    assert_close_relative(grads, expected_grads, 1e-10)


def saved_activation_elements(module, hidden):
    return saved_activation_floats(module.parameters(), lambda: module(hidden))


def test_fused_mixer_keeps_only_in_proj_output_its_input_and_state_checkpoints():
    mixer = random_mixer(hidden_size=32, state_size=16, dtype=torch.float32)
    batch, length = 2, 300
    hidden = torch.randn(batch, length, 32, requires_grad=True)
    d_inner, n_state = mixer.config.intermediate_size, mixer.config.state_size
    chunks = -(-length // CHECKPOINT_EVERY)
    expected = batch * length * 32 + batch * length * 2 * d_inner + 2 * batch * d_inner * chunks * n_state
    # the stacked direction parameters and the (2, d_inner, N) A are parameter-sized, not per token
    parameter_sized = sum(p.numel() for p in mixer.parameters())
    assert expected <= saved_activation_elements(mixer, hidden) <= expected + parameter_sized
    assert saved_activation_elements(unfused_copy(mixer, "numba"), hidden) > 2 * expected


def test_peft_style_wrapped_out_proj_stays_a_module_call():
    mixer = random_mixer()

    class WrappedLinear(nn.Linear):  # as an adapter library wraps a projection: it must still be called
        def forward(self, x):
            return super().forward(x) * 2

    wrapped = copy.deepcopy(mixer)
    wrapped.out_proj = WrappedLinear(wrapped.out_proj.in_features, wrapped.out_proj.out_features, bias=False)
    wrapped.out_proj.load_state_dict(mixer.out_proj.state_dict())
    wrapped.out_proj.to(torch.float64)
    hidden = torch.randn(2, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(wrapped(hidden), 2 * mixer(hidden))
    out, grads = outputs_and_gradients(wrapped, hidden)
    expected, expected_grads = outputs_and_gradients(unfused_copy(wrapped), hidden)
    assert_close_relative(out, expected, 1e-10)
    assert_close_relative(grads, expected_grads, 1e-10)


def test_unfused_when_asked_or_when_the_backend_has_no_fused_mixer():
    config = small_config()
    assert mixer_path(config, torch.device("cpu")) == "fused"
    for overrides in (dict(fused_mixer=False), dict(scan_backend="chunked"), dict(scan_backend="reference")):
        assert mixer_path(small_config(**overrides), torch.device("cpu")) == "unfused"


def test_fused_mixer_results_do_not_depend_on_the_thread_count():
    mixer = random_mixer(hidden_size=32, state_size=16, dtype=torch.float32)
    hidden = torch.randn(2, 140, 32)
    threads = torch.get_num_threads()
    results = []
    for count in (1, 2):
        torch.set_num_threads(count)
        try:
            out, grads = outputs_and_gradients(mixer, hidden)
        finally:
            torch.set_num_threads(threads)
        results.append([out, *grads.values()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_half_precision_input_keeps_its_dtype():
    mixer = random_mixer(dtype=torch.float32)
    hidden = torch.randn(2, 9, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixer(hidden)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), mixer(hidden), rtol=0.05, atol=0.05)


def fused_op_arguments(mixer, hidden):
    xz = mixer.in_proj(hidden).detach().requires_grad_(True)
    parameters = [p.detach().contiguous().requires_grad_(True) for p in mixer._stacked_parameters()]
    return xz, parameters, mixer.out_proj.weight.detach().requires_grad_(True)


def test_fused_op_registration_passes_opcheck():
    # The fake (meta) implementation, the autograd registration and the schema, against the real kernels.
    mixer = random_mixer(dtype=torch.float32)
    xz, parameters, out_proj_weight = fused_op_arguments(mixer, torch.randn(2, 70, 16))
    op = torch.ops.stretchysnake.bidirectional_mixer_fwd.default
    torch.library.opcheck(op, (xz, *parameters, out_proj_weight))
    torch.library.opcheck(op, (xz, *parameters, None))


def test_fused_mixer_compiles_with_torch_compile():
    mixer = random_mixer(dtype=torch.float32)
    hidden = torch.randn(2, 20, 16)
    compiled = torch.compile(mixer, backend="aot_eager", fullgraph=True)
    expected, expected_grads = outputs_and_gradients(mixer, hidden)
    actual, grads = outputs_and_gradients(compiled, hidden)
    torch.testing.assert_close(actual, expected)
    for name in expected_grads:
        compiled_name = name if name == "hidden" else f"_orig_mod.{name}"
        torch.testing.assert_close(grads[compiled_name], expected_grads[name], msg=name)


def mamba_inner_reference(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                          out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                          C_proj_bias=None, delta_softplus=True, **_):
    """mamba-ssm's ``mamba_inner_ref`` (its pure-PyTorch statement of ``mamba_inner_fn``), written from its
    documented semantics: xz (batch, 2 * d_inner, L), conv1d_weight (d_inner, 1, K), the scan on the causal conv's
    SiLU output, out_proj on the gated result, output (batch, L, out)."""
    length = xz.shape[-1]
    rank = delta_proj_weight.shape[1]
    n_state = A.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = F.silu(F.conv1d(x, conv1d_weight, conv1d_bias, padding=conv1d_weight.shape[-1] - 1,
                        groups=x.shape[1])[..., :length])
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), x_proj_weight)  # (batch * L, rank + 2N)
    delta = (delta_proj_weight @ x_dbl[:, :rank].t()).reshape(-1, xz.shape[0], length).transpose(0, 1)
    B = x_dbl[:, rank:rank + n_state].reshape(xz.shape[0], length, n_state).transpose(1, 2)
    C = x_dbl[:, -n_state:].reshape(xz.shape[0], length, n_state).transpose(1, 2)
    y = selective_scan_reference(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def test_mamba_ssm_path_calls_mamba_inner_fn_per_direction():
    mixer = random_mixer()
    hidden = torch.randn(2, 13, 16, dtype=torch.float64)
    xz = mixer.in_proj(hidden)
    expected = bidirectional_mixer_fused(xz, *mixer._stacked_parameters(), mixer.out_proj.weight)
    actual = bidirectional_mixer_mamba_ssm(mamba_inner_reference, xz, *mixer._stacked_parameters(),
                                           mixer.out_proj.weight)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_mixer_uses_mamba_inner_fn_when_mamba_ssm_is_the_backend(monkeypatch):
    mixer = random_mixer()
    hidden = torch.randn(2, 13, 16, dtype=torch.float64)
    expected = mixer(hidden)
    calls = []

    def counting_reference(*args, **kwargs):
        calls.append(args[0].shape)
        return mamba_inner_reference(*args, **kwargs)

    monkeypatch.setattr(modeling, "mixer_path", lambda config, device: "mamba_ssm_fused")
    monkeypatch.setattr(modeling, "load_mamba_inner_fn", lambda: counting_reference)
    torch.testing.assert_close(mixer(hidden), expected, rtol=1e-10, atol=1e-12)
    assert calls == [torch.Size([2, 2 * mixer.config.intermediate_size, 13])] * 2


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_fused_mixer_triton_path_under_the_interpreter():
    # CI has no GPU: TRITON_INTERPRET=1 runs the Triton scans (with PyTorch's conv) on CPU tensors.
    script = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, "tests")
        from modeling_stretchysnake import custom_ops
        custom_ops.uses_numba = lambda tensor: False
        from test_bidirectional_mixer import (assert_close_relative, outputs_and_gradients, random_mixer,
                                              unfused_copy)
        for length in (1, 33, 150):
            mixer = random_mixer(dtype=torch.float32, state_size=16)
            hidden = torch.randn(2, length, 16)
            out, grads = outputs_and_gradients(mixer, hidden)
            expected, expected_grads = outputs_and_gradients(unfused_copy(mixer), hidden)
            assert_close_relative(out, expected, 1e-5)
            assert_close_relative(grads, expected_grads, 1e-5)
        print("triton mixer ok")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and "triton mixer ok" in result.stdout, result.stderr[-3000:]
