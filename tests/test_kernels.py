"""asiarch's Triton kernels equal the PyTorch references, outputs and every gradient.

On the CPU the kernels run in Triton's interpreter, which needs TRITON_INTERPRET=1 set
before triton itself is first imported (``triton.jit`` reads it when a function is
defined, triton's own library functions included). A test process has usually imported
triton long before this module (fla does), so the ``*_interpreted`` tests run in a child
pytest started with the variable set (``test_kernels_in_the_triton_interpreter``) and are
skipped in the parent. The interpreter is slow, so the CPU shapes are small; the same
comparisons at larger sizes, in fp32 and bf16, run on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton.language as tl

import asiarch.kernels
from asiarch.arch.ops.backend import use_fla, use_triton
from asiarch.arch.ops.sliding_window import sliding_window_attention, sliding_window_torch
from asiarch.arch.ops.ssd import chunk_ssd, ssd_chunk_torch
from conftest import requires_cuda

# Tolerances on max |kernel - reference| / max(max |reference|, 1):
INTERPRETED_TOL = 1e-5  # fp32 in the interpreter
STRONG_DECAY_TOL = 1e-4  # cumulative log-decays near -300: their differences carry ~2e-5 rounding either way
CUDA_FP32_TOL = 1e-4  # fp32 on the GPU (IEEE fp32 products, different summation order)
BF16_TOL = 2e-2  # bf16 inputs and results against the fp32 reference on the same (rounded) inputs
INTERPRETER_TIMEOUT = 300  # seconds for the child pytest

IN_INTERPRETER = all(type(f).__name__ == "InterpretedFunction" for f in (tl.zeros, asiarch.kernels.ssd._ssd_states_kernel))
interpreted = pytest.mark.skipif(
    not IN_INTERPRETER, reason="runs in test_kernels_in_the_triton_interpreter (a child pytest with TRITON_INTERPRET=1)")


@pytest.mark.skipif(IN_INTERPRETER, reason="this process is the interpreted run")
def test_kernels_in_the_triton_interpreter():
    """Runs this module's ``*_interpreted`` tests in a child pytest whose triton interprets kernels on the CPU."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5", __file__, "-k", "interpreted"],
        cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=INTERPRETER_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], run.stdout[-3000:]


def assert_near(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: not finite"
    # relative to the largest entry, absolute below 1 (a gradient that is zero up to rounding)
    err = (actual.float() - expected.float()).abs().max().item() / max(expected.float().abs().max().item(), 1.0)
    assert err <= tol, f"{what}: error {err:.2e} > {tol:.0e}"


def leaves(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if x is None else x.detach().clone().requires_grad_(True) for x in tensors]


# ------------------------------------------------------------------ SSD


def ssd_inputs(b, t, h, dk, dv, initial, device="cpu", dtype=torch.float32, decay=0.7, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=gen, device=device)
    k = torch.randn(b, t, h, dk, generator=gen, device=device) * dk**-0.5
    v = torch.randn(b, t, h, dv, generator=gen, device=device)
    g = -torch.rand(b, t, h, generator=gen, device=device) * decay
    h0 = torch.randn(b, h, dk, dv, generator=gen, device=device) * 0.3 if initial else None
    q, k, v = (x.to(dtype) for x in (q, k, v))
    return q, k, v, g, h0


def compare_ssd(kernel, inputs, chunk_size, tol, scale=None, final_state=True):
    ours, ref = leaves(*inputs), leaves(*(x.float() if x is not None else None for x in inputs))
    o, s = kernel(*ours[:4], scale=scale, initial_state=ours[4], output_final_state=final_state, chunk_size=chunk_size)
    ro, rs = ssd_chunk_torch(*ref[:4], scale=scale, initial_state=ref[4], output_final_state=final_state,
                             chunk_size=chunk_size)
    assert o.dtype == inputs[2].dtype
    gen = torch.Generator(o.device).manual_seed(1)
    do = torch.randn(ro.shape, generator=gen, device=o.device)
    loss, ref_loss = (o.float() * do).sum(), (ro * do).sum()
    assert_near(o, ro, tol, "o")
    if final_state:
        assert s.dtype == torch.float32
        assert_near(s, rs, tol, "final state")
        ds = torch.randn(rs.shape, generator=gen, device=o.device)
        loss, ref_loss = loss + (s * ds).sum(), ref_loss + (rs * ds).sum()
    else:
        assert s is None
    loss.backward()
    ref_loss.backward()
    for name, x, rx in zip(("dq", "dk", "dv", "dg", "dh0"), ours, ref):
        if x is not None:
            assert x.grad is not None and x.grad.dtype == x.dtype, name
            assert_near(x.grad, rx.grad, tol, name)


@pytest.mark.parametrize("chunk_size,initial,dims", [
    (16, True, (16, 16)),
    (32, True, (24, 40)),  # head sizes that are not powers of two: masked tiles
    (16, False, (16, 8)),
    (32, False, (80, 16)),  # two key tiles: dg is summed over them
])
@interpreted
def test_ssd_kernel_matches_reference_interpreted(chunk_size, initial, dims):
    inputs = ssd_inputs(2, 37, 2, *dims, initial)  # T = 37: the last chunk is partial
    compare_ssd(asiarch.kernels.ssd_triton, inputs, chunk_size, INTERPRETED_TOL, scale=0.4, final_state=initial)


@interpreted
def test_ssd_kernel_is_finite_under_strong_decay_interpreted():
    """Log-decays of -60 a step: exp of the raw cumulative sums would underflow and their
    differences above the diagonal overflow; the kernel only exponentiates differences <= 0."""
    inputs = ssd_inputs(1, 37, 1, 16, 16, True, decay=60.0)
    compare_ssd(asiarch.kernels.ssd_triton, inputs, 16, STRONG_DECAY_TOL)


def test_ssd_kernel_rejects_bad_arguments():
    q, k, v, g, _ = ssd_inputs(1, 8, 1, 16, 16, False)
    with pytest.raises(ValueError, match="power of two"):
        asiarch.kernels.ssd_triton(q, k, v, g, chunk_size=24)
    with pytest.raises(ValueError, match="initial_state"):
        asiarch.kernels.ssd_triton(q, k, v, g, initial_state=torch.zeros(1, 1, 16, 8), chunk_size=16)
    with pytest.raises(ValueError, match=r"g \[B, T, H\]"):
        asiarch.kernels.ssd_triton(q, k, v, g[..., None], chunk_size=16)


# ------------------------------------------------------------------ sliding window


def window_inputs(b, t, h, dk, dv, device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    return tuple(torch.randn(b, t, h, d, generator=gen, device=device).to(dtype) for d in (dk, dk, dv))


def compare_window(kernel, inputs, window, tol, scale=None, **kwargs):
    ours, ref = leaves(*inputs), leaves(*(x.float() for x in inputs))
    o = kernel(*ours, window, scale, **kwargs)
    ro = sliding_window_torch(*ref, window, scale)
    assert o.dtype == inputs[2].dtype
    assert_near(o, ro, tol, "o")
    do = torch.randn(ro.shape, generator=torch.Generator(o.device).manual_seed(1), device=o.device)
    (o.float() * do).sum().backward()
    (ro * do).sum().backward()
    for name, x, rx in zip(("dq", "dk", "dv"), ours, ref):
        assert x.grad is not None and x.grad.dtype == x.dtype, name
        assert_near(x.grad, rx.grad, tol, name)


@pytest.mark.parametrize("window,block,dims", [
    (5, 16, (16, 16)),  # windows inside one tile and across tile edges
    (20, 16, (24, 40)),
    (1, 16, (16, 8)),  # each token attends to itself only
    (100, 32, (16, 16)),  # wider than the sequence: full causal attention
])
@interpreted
def test_sliding_window_kernel_matches_reference_interpreted(window, block, dims):
    compare_window(asiarch.kernels.sliding_window_attention_triton, window_inputs(2, 37, 2, *dims), window, INTERPRETED_TOL, scale=0.3,
                   block_size=block)


@interpreted
def test_sliding_window_temperature_gets_its_gradient_interpreted():
    """The rendered candidates pass ``q * exp(local_log_temp)`` with scale 1: the temperature learns."""
    q, k, v = window_inputs(1, 37, 2, 16, 16)
    log_temp, ref_log_temp = leaves(torch.tensor([-1.0, 0.5]), torch.tensor([-1.0, 0.5]))
    o = asiarch.kernels.sliding_window_attention_triton(q * log_temp.exp().view(1, 1, -1, 1), k, v, 8, 1.0)
    ro = sliding_window_torch(q * ref_log_temp.exp().view(1, 1, -1, 1), k, v, 8, 1.0)
    o.sum().backward()
    ro.sum().backward()
    assert_near(log_temp.grad, ref_log_temp.grad, INTERPRETED_TOL, "d log_temp")


@interpreted
def test_kernels_take_bf16_and_mixed_dtypes_interpreted():
    """Under CUDA autocast the candidates hand over bf16 k, v and (times the fp32 temperature) fp32 q."""
    compare_ssd(asiarch.kernels.ssd_triton, ssd_inputs(1, 37, 2, 16, 16, True, dtype=torch.bfloat16), 16, BF16_TOL)
    q, k, v = window_inputs(1, 37, 2, 16, 16)
    compare_window(asiarch.kernels.sliding_window_attention_triton, (q, k.bfloat16(), v.bfloat16()), 8, BF16_TOL,
                   block_size=16)


def test_sliding_window_op_on_cpu_is_the_reference():
    q, k, v = window_inputs(1, 9, 2, 8, 4)
    out = sliding_window_attention(q, k, v, 3)
    torch.testing.assert_close(out, sliding_window_torch(q, k, v, 3, 8**-0.5), rtol=0, atol=0)
    # brute force: softmax over the band of a full score matrix
    scores = torch.einsum("bihk,bjhk->bhij", q, k) * 8**-0.5
    i, j = torch.arange(9).view(9, 1), torch.arange(9).view(1, 9)
    scores = scores.masked_fill(~((j <= i) & (j > i - 3)), float("-inf"))
    torch.testing.assert_close(out, torch.einsum("bhij,bjhv->bihv", scores.softmax(-1), v), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        sliding_window_attention(q, k, v, 0)


def test_backend_choice_on_cpu():
    x = torch.zeros(1)
    assert not use_fla(x, "auto") and not use_triton(x, "auto") and not use_triton(x, "auto", prefer=True)
    assert not use_fla(x, "torch") and not use_triton(x, "torch")
    for backend in ("fla", "triton"):
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            use_triton(x, backend)
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            use_fla(x, backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        use_triton(x, "cuda")
    q, k, v, g, _ = ssd_inputs(1, 5, 1, 4, 4, False)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        chunk_ssd(q, k, v, g, backend="triton")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        sliding_window_attention(q, k, v, 2, backend="triton")


# ------------------------------------------------------------------ CUDA


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, CUDA_FP32_TOL), (torch.bfloat16, BF16_TOL)])
@pytest.mark.parametrize("t,chunk_size,dims,initial", [(300, 64, (64, 64), True), (1000, 64, (128, 128), False),
                                                       (257, 32, (128, 64), True)])
def test_ssd_kernel_matches_reference_cuda(dtype, tol, t, chunk_size, dims, initial):
    inputs = ssd_inputs(2, t, 4, *dims, initial, device="cuda", dtype=dtype)
    compare_ssd(asiarch.kernels.ssd_triton, inputs, chunk_size, tol, final_state=initial)


@requires_cuda
def test_chunk_ssd_triton_backend_matches_fla_cuda():
    q, k, v, g, h0 = ssd_inputs(2, 500, 4, 64, 64, True, device="cuda")
    ours = chunk_ssd(q, k, v, g, initial_state=h0, output_final_state=True, backend="triton")
    theirs = chunk_ssd(q, k, v, g, initial_state=h0, output_final_state=True, backend="fla")
    assert_near(ours[0], theirs[0], 1e-2, "o")  # fla multiplies in TF32
    assert_near(ours[1], theirs[1], 1e-2, "final state")


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, CUDA_FP32_TOL), (torch.bfloat16, BF16_TOL)])
@pytest.mark.parametrize("t,window,dims", [(1000, 64, (64, 64)), (777, 256, (32, 128)), (300, 1000, (128, 256)),
                                           (513, 1, (64, 64))])
def test_sliding_window_kernel_matches_reference_cuda(dtype, tol, t, window, dims):
    inputs = window_inputs(2, t, 4, *dims, device="cuda", dtype=dtype)
    compare_window(asiarch.kernels.sliding_window_attention_triton, inputs, window, tol)


@requires_cuda
def test_sliding_window_op_runs_the_kernel_on_cuda_under_auto():
    q, k, v = window_inputs(1, 200, 2, 32, 32, device="cuda")
    kernel = asiarch.kernels.sliding_window_attention_triton(q, k, v, 16)
    torch.testing.assert_close(sliding_window_attention(q, k, v, 16), kernel, rtol=0, atol=0)
    torch.testing.assert_close(sliding_window_attention(q, k, v, 16, backend="fla"), kernel, rtol=0, atol=0)
    assert_near(sliding_window_attention(q, k, v, 16, backend="torch"), kernel, CUDA_FP32_TOL, "torch path")


@pytest.mark.parametrize("t,window", [(1, 4), (37, 1), (37, 5), (37, 16), (20, 64), (64, 16)])
def test_sliding_window_torch_equals_dense_banded_attention(t, window):
    """The blocked PyTorch path against softmax over the full T x T scores with the band masked."""
    gen = torch.Generator().manual_seed(t * 100 + window)
    q, k, v = (torch.randn(2, t, 3, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    scores = torch.einsum("bthk,bshk->bhts", q, k) * 0.7
    pos = torch.arange(t)
    band = (pos.view(t, 1) >= pos.view(1, t)) & (pos.view(t, 1) - pos.view(1, t) < window)
    dense = torch.einsum("bhts,bshv->bthv", scores.masked_fill(~band, float("-inf")).softmax(-1), v)
    torch.testing.assert_close(sliding_window_torch(q, k, v, window, 0.7), dense, atol=1e-12, rtol=1e-12)
