"""Every scan backend against the sequential reference: outputs and all eight gradients, over the shapes and
decays that break scans (L = 1, 2, 33, 150 across checkpoint chunks, batch > 1, strided inputs, absent optional
terms, extreme decays, 16-bit inputs), plus dispatch, the custom op's registration and the Triton kernel under
its interpreter."""

import importlib
import logging
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from modeling_stretchysnake.selective_scan import (
    resolve_scan_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from modeling_stretchysnake.selective_scan_fused import selective_scan_fused, triton_available

scan_module = importlib.import_module("modeling_stretchysnake.selective_scan")

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
BACKENDS = {"chunked": selective_scan_chunked, "numba": selective_scan_fused}


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


def outputs_and_gradients(fn, inputs, dtype=None):
    """fn's output and the gradients of a weighted sum of it, for every tensor input (on fresh leaves)."""
    leaves = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().clone().to(dtype or value.dtype).requires_grad_(True)
        leaves[name] = value
    out = fn(**leaves)
    weights = torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)
    (out * weights).sum().backward()
    grads = {name: leaves[name].grad for name in GRAD_NAMES if isinstance(leaves.get(name), torch.Tensor)}
    return out.detach(), grads


def assert_matches_reference(fn, inputs, tol, dtype=None):
    expected, expected_grads = outputs_and_gradients(selective_scan_reference, inputs)
    actual, grads = outputs_and_gradients(fn, inputs, dtype)
    assert torch.isfinite(actual).all() and all(torch.isfinite(g).all() for g in grads.values())
    scale = expected.abs().max().clamp(min=1e-30)
    assert ((actual.double() - expected.double()).abs().max() / scale) < tol, "output"
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        reference = expected_grads[name].double()
        error = (grad.double() - reference).abs().max() / reference.abs().max().clamp(min=1e-30)
        assert error < tol, (name, error.item())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("length", [1, 2, 33, 150])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_backend_matches_reference(backend, length, dtype, tol):
    # 150 steps span three of the fused kernel's checkpoint chunks (every 64 steps), the last one partial
    assert_matches_reference(BACKENDS[backend], scan_inputs(length=length, n=16), tol, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_without_optional_terms(backend):
    inputs = scan_inputs(length=70)
    for name in ("D", "z", "delta_bias"):
        inputs[name] = None
    inputs["delta_softplus"] = False
    inputs["delta"] = inputs["delta"].abs()
    assert_matches_reference(BACKENDS[backend], inputs, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_with_strided_inputs(backend):
    # The mixer hands over B, C as transposes of (batch, L, N) and delta as a transpose of (batch, L, d_inner).
    inputs = scan_inputs(length=40)
    for name in ("u", "delta", "B", "C", "z"):
        inputs[name] = inputs[name].transpose(1, 2).contiguous().transpose(1, 2)
    inputs["A"] = inputs["A"].t().contiguous().t()
    assert not any(inputs[name].is_contiguous() for name in ("u", "delta", "A", "B", "C", "z"))
    assert_matches_reference(BACKENDS[backend], inputs, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("a_scale", [1e4, 30.0])
def test_extreme_decay_is_finite_and_exact(backend, a_scale):
    # a_scale 1e4: thousands of log-decay per step; 30: tens per step, hundreds per chunk. Computed in float32.
    inputs = scan_inputs(length=80, n=16, seed=3)
    inputs["A"] = inputs["A"] * a_scale
    assert_matches_reference(BACKENDS[backend], inputs, 1e-5, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decay_concentrated_in_one_part_of_the_sequence(backend):
    # Strong decay in the first half only: the old closed-form chunks overflowed here (NaN losses in training).
    inputs = scan_inputs(batch=2, d_inner=3, n=4, length=32)
    delta = torch.full((2, 3, 32), 1e-3, dtype=torch.float64)
    delta[..., :16] = 6.0
    inputs.update(delta=delta, A=-torch.ones(3, 4, dtype=torch.float64), delta_bias=None, delta_softplus=False)
    assert_matches_reference(BACKENDS[backend], inputs, 1e-5, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_inputs_keep_their_dtype(backend):
    inputs = {k: (v.bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in scan_inputs(dtype=torch.float32).items()}
    out = BACKENDS[backend](**inputs)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), selective_scan_reference(**inputs).float(), rtol=2e-2, atol=2e-2)


def test_fused_results_do_not_depend_on_the_thread_count():
    inputs = scan_inputs(batch=1, d_inner=40, length=100, n=16, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    for count in (1, 2):
        torch.set_num_threads(count)
        try:
            out, grads = outputs_and_gradients(selective_scan_fused, inputs)
        finally:
            torch.set_num_threads(threads)
        results.append([out, *grads.values()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_fused_op_registration_passes_opcheck():
    # Checks the fake (meta) implementation, the autograd registration and the schema against the real kernel.
    inputs = scan_inputs(batch=2, d_inner=5, length=70, n=4, dtype=torch.float32)
    args = [inputs[name] for name in GRAD_NAMES]
    args[0].requires_grad_(True)
    args[1].requires_grad_(True)
    torch.library.opcheck(torch.ops.stretchysnake.selective_scan_fwd.default, (*args, True))
    args[5] = args[6] = args[7] = None
    torch.library.opcheck(torch.ops.stretchysnake.selective_scan_fwd.default, (*args, False))


def test_fused_op_compiles_with_torch_compile():
    inputs = scan_inputs(batch=1, d_inner=4, length=20, n=4, dtype=torch.float32)
    compiled = torch.compile(selective_scan_fused, backend="aot_eager", fullgraph=True)
    expected, expected_grads = outputs_and_gradients(selective_scan_fused, inputs)
    actual, grads = outputs_and_gradients(compiled, inputs)
    torch.testing.assert_close(actual, expected)
    for name in expected_grads:
        torch.testing.assert_close(grads[name], expected_grads[name])


def test_chunked_scan_has_no_host_sync_or_data_dependent_branch():
    # torch.export fails on .item() / float(tensor) and on Python branches over tensor values.
    class Scan(torch.nn.Module):
        def forward(self, u, delta, A, B, C):
            return selective_scan_chunked(u, delta, A, B, C, delta_softplus=True)

    inputs = scan_inputs(length=40, dtype=torch.float32)
    args = tuple(inputs[name] for name in ("u", "delta", "A", "B", "C"))
    exported = torch.export.export(Scan(), args)
    torch.testing.assert_close(exported.module()(*args), Scan()(*args))


def test_backend_resolution_on_cpu(monkeypatch):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    cpu = torch.device("cpu")
    assert resolve_scan_backend("auto", cpu) == "numba"
    assert resolve_scan_backend("chunked", cpu) == "chunked"
    monkeypatch.setattr(scan_module, "numba_available", lambda: False)
    assert resolve_scan_backend("auto", cpu) == "chunked"
    with pytest.raises(RuntimeError, match="pip install numba"):
        resolve_scan_backend("numba", cpu)
    monkeypatch.setenv(scan_module.SCAN_BACKEND_ENV, "reference")
    assert resolve_scan_backend("chunked", cpu) == "reference"
    monkeypatch.setenv(scan_module.SCAN_BACKEND_ENV, "nonsense")
    with pytest.raises(ValueError, match="Unknown scan backend"):
        resolve_scan_backend("auto", cpu)


def test_backend_resolution_on_cuda_prefers_mamba_ssm_then_triton(monkeypatch):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    cuda = torch.device("cuda")
    monkeypatch.setattr(scan_module, "load_mamba_ssm_scan", lambda: object())
    assert resolve_scan_backend("auto", cuda) == "mamba_ssm"
    monkeypatch.setattr(scan_module, "load_mamba_ssm_scan", lambda: None)
    monkeypatch.setattr(scan_module, "triton_available", lambda: True)
    assert resolve_scan_backend("auto", cuda) == "triton"
    monkeypatch.setattr(scan_module, "triton_available", lambda: False)
    assert resolve_scan_backend("auto", cuda) == "chunked"


@pytest.mark.parametrize("backend", ["mamba_ssm", "triton"])
def test_cuda_backends_refuse_cpu_tensors(monkeypatch, backend):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    monkeypatch.setattr(scan_module, "load_mamba_ssm_scan", lambda: object())
    monkeypatch.setattr(scan_module, "triton_available", lambda: True)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        resolve_scan_backend(backend, torch.device("cpu"))


def test_numba_refuses_cuda_tensors(monkeypatch):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    with pytest.raises(RuntimeError, match="needs CPU tensors"):
        resolve_scan_backend("numba", torch.device("cuda"))


@pytest.mark.parametrize("backend", ["reference", "chunked", "numba"])
def test_dispatch_uses_the_named_backend(monkeypatch, backend):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    calls = []
    target = {"reference": "selective_scan_reference", "chunked": "selective_scan_chunked",
              "numba": "selective_scan_fused"}[backend]
    monkeypatch.setattr(scan_module, target, lambda *a, **k: calls.append(backend) or a[0])
    selective_scan(**scan_inputs(), backend=backend)
    assert calls == [backend]


def test_backend_is_logged_once(monkeypatch, caplog):
    monkeypatch.delenv(scan_module.SCAN_BACKEND_ENV, raising=False)
    monkeypatch.setattr(scan_module, "_logged_backends", set())
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        for _ in range(3):
            resolve_scan_backend("auto", torch.device("cpu"))
    assert sum("backend: numba" in record.message for record in caplog.records) == 1


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_kernels_match_the_reference_under_the_interpreter():
    # CI has no GPU: TRITON_INTERPRET=1 runs the same kernels on CPU tensors (set before triton is imported).
    script = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, "tests")
        from test_selective_scan import assert_matches_reference, scan_inputs
        from modeling_stretchysnake import selective_scan_triton as kernels
        from modeling_stretchysnake.selective_scan_fused import CHECKPOINT_EVERY

        def triton_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
            return Scan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

        class Scan(torch.autograd.Function):  # the kernels' own gradients, without the CUDA-only op dispatch
            @staticmethod
            def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus):
                rows = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
                chunks = -(-u.shape[2] // CHECKPOINT_EVERY)
                checkpoints = torch.empty(u.shape[0], u.shape[1], chunks, A.shape[1])
                out = kernels.scan_forward(u, delta, A, *rows, D, z, delta_bias, softplus, checkpoints)
                ctx.save_for_backward(u, delta, A, *rows, D, z, delta_bias, checkpoints)
                ctx.softplus = softplus
                return out

            @staticmethod
            def backward(ctx, grad_out):
                u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
                g_u, g_delta, g_z, g_A, g_D, g_bias, g_B, g_C = kernels.scan_backward(
                    grad_out.contiguous(), u, delta, A, B, C, D, z, delta_bias, checkpoints, ctx.softplus)
                return (g_u, g_delta, g_A.sum(0), g_B.sum(1).transpose(1, 2), g_C.sum(1).transpose(1, 2),
                        g_D.sum(0) if D is not None else None, g_z if z is not None else None,
                        g_bias.sum(0) if delta_bias is not None else None, None)

        for length, n, d_inner in ((1, 16, 6), (70, 16, 40), (33, 5, 6)):
            assert_matches_reference(triton_scan, scan_inputs(length=length, n=n, d_inner=d_inner), 1e-5, torch.float32)
        inputs = scan_inputs(length=20)
        for name in ("D", "z", "delta_bias"):
            inputs[name] = None
        inputs["delta_softplus"] = False
        inputs["delta"] = inputs["delta"].abs()
        assert_matches_reference(triton_scan, inputs, 1e-5, torch.float32)
        extreme = scan_inputs(length=40, n=16, seed=3)
        extreme["A"] = extreme["A"] * 1e4
        assert_matches_reference(triton_scan, extreme, 1e-5, torch.float32)
        print("triton ok")
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and "triton ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_kernels_run_on_torch_threads_without_a_pool_of_their_own(threads):
    """Launchers give each process OMP_NUM_THREADS=1; the kernels then run in the calling thread alone. numba's own
    threading layer (a per-core OpenMP pool whose idle threads spin, 2.3x the step time with 2 processes on 2
    cores) is never started."""
    script = textwrap.dedent(
        """
        import threading, torch
        import numba.np.ufunc.parallel as numba_parallel
        from modeling_stretchysnake.selective_scan_fused import selective_scan_fused
        u, delta, z = (torch.randn(2, 8, 20, requires_grad=True) for _ in range(3))
        A, B, C = -torch.rand(8, 16), torch.randn(2, 16, 20), torch.randn(2, 16, 20)
        before = threading.active_count()
        selective_scan_fused(u, delta, A, B, C, z=z, delta_softplus=True).sum().backward()
        print("torch", torch.get_num_threads(), "helpers", threading.active_count() - before,
              "numba layer", numba_parallel._is_initialized)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"torch {threads} helpers {threads - 1} numba layer False" in result.stdout, result.stdout


def test_gradient_groups_are_never_empty_and_keep_the_main_job_split():
    """Each backward task zeroes and sums its per-lane dB/dC buffer whether it has channel blocks or not: the group
    count is what the group size needs (the main job's batch 8, d_inner 192: 4 groups of 3 blocks, as before)."""
    from modeling_stretchysnake.selective_scan_numba import LANES, gradient_groups

    assert gradient_groups(8, 192) == 4
    for batch in (1, 2, 3, 4, 8, 16, 64):
        for d_inner in (8, 16, 40, 192, 384, 768, 1152, 1536):
            blocks = -(-d_inner // LANES)
            groups = gradient_groups(batch, d_inner)
            per_group = -(-blocks // groups)
            assert 1 <= groups <= 16 and (groups - 1) * per_group < blocks, (batch, d_inner, groups)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_backward_sums_groups_of_blocks_over_chunks(channels_last):
    """The backward's tasks are groups of channel blocks whose dB and dC are summed lane by lane across the group:
    two groups of two blocks (56 channels: 16, 16, 16 and a partial 8), three checkpoint chunks, the last partial;
    inputs contiguous, and as views of (batch, L, channels) tensors."""
    from modeling_stretchysnake.selective_scan_numba import LANES, gradient_groups

    batch, d_inner = 16, 56
    assert -(-d_inner // LANES) == 4 and gradient_groups(batch, d_inner) == 2
    inputs = scan_inputs(batch=batch, d_inner=d_inner, length=150, n=16)
    if channels_last:  # as the mixer's z, a view of the in_proj's (batch, L, 2 d_inner) output
        for name in ("u", "delta", "z"):
            inputs[name] = inputs[name].transpose(1, 2).contiguous().transpose(1, 2)
    assert_matches_reference(selective_scan_fused, inputs, 1e-10)


def test_scan_kernels_ask_llvm_for_vectors_as_wide_as_a_block():
    """The scans' compiler marks its LLVM functions with the vector width of a block of lanes (LLVM's default on
    AVX-512 CPUs is 256 bits, half a block); the conv kernels' compiler leaves LLVM's choice."""
    import numpy as np
    from numba import njit

    from modeling_stretchysnake.selective_scan_numba import VECTOR_BITS, _NoAliasCompiler, _WideVectorCompiler

    def scale(x, out):
        for i in range(x.shape[0]):
            out[i] = 2 * x[i]

    attribute = f'"prefer-vector-width"="{VECTOR_BITS}"'
    x = np.ones(64, dtype=np.float32)
    for compiler, marked in ((_WideVectorCompiler, True), (_NoAliasCompiler, False)):
        kernel = njit(pipeline_class=compiler)(scale)
        out = np.zeros_like(x)
        kernel(x, out)
        assert (out == 2).all()
        assert (attribute in kernel.inspect_llvm(kernel.signatures[0])) is marked
