"""The chunkwise PyTorch operators equal flash-linear-attention's naive recurrences (fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fla.ops.delta_rule.naive import delta_rule_recurrence
from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

from asiarch.arch.ops import ShortConvolution, chunk_delta_rule, chunk_gated_delta_rule, chunk_ssd
from conftest import requires_cuda

ATOL = 2e-5
SHAPES = [(2, 1, 16), (2, 37, 16), (1, 64, 16), (2, 130, 32), (1, 200, 64)]  # (B, T, chunk)


def make_inputs(b, t, h=3, dk=16, dv=8, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=gen)
    k = F.normalize(torch.randn(b, t, h, dk, generator=gen), dim=-1)
    v = torch.randn(b, t, h, dv, generator=gen)
    beta = torch.rand(b, t, h, generator=gen)
    g = -torch.rand(b, t, h, generator=gen) * 0.5
    h0 = torch.randn(b, h, dk, dv, generator=gen) * 0.1
    tensors = [q, k, v, beta, g, h0]
    if requires_grad:
        for x in tensors:
            x.requires_grad_(True)
    return tensors


def bhtd(x):
    return x.transpose(1, 2)


@pytest.mark.parametrize("b,t,chunk", SHAPES)
def test_delta_rule_matches_fla_naive(b, t, chunk):
    q, k, v, beta, _, h0 = make_inputs(b, t)
    o, s = chunk_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, chunk_size=chunk)
    ref_o, ref_s = delta_rule_recurrence(bhtd(q), bhtd(k), bhtd(v), bhtd(beta), initial_state=h0.clone())
    torch.testing.assert_close(o, bhtd(ref_o), atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(s, ref_s, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("b,t,chunk", SHAPES)
def test_gated_delta_rule_matches_fla_naive(b, t, chunk):
    q, k, v, beta, g, h0 = make_inputs(b, t)
    o, s = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=chunk)
    ref_o, ref_s = naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(s, ref_s, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("b,t,chunk", SHAPES)
def test_ssd_matches_fla_naive_simple_gla(b, t, chunk):
    q, k, v, _, g, h0 = make_inputs(b, t)
    o, s = chunk_ssd(q, k, v, g, scale=1.0, initial_state=h0, output_final_state=True, chunk_size=chunk)
    ref_o, ref_s = naive_recurrent_simple_gla(q, k, v, g, scale=1.0, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(s, ref_s, atol=ATOL, rtol=1e-4)


def test_gradients_match_the_recurrence():
    """Backward through the chunked solve equals backward through the token-by-token recurrence."""
    chunk_inputs = make_inputs(2, 50, requires_grad=True)
    ref_inputs = make_inputs(2, 50, requires_grad=True)
    q, k, v, beta, g, _ = chunk_inputs
    o, _ = chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=16)
    rq, rk, rv, rbeta, rg, _ = ref_inputs
    ref_o, _ = naive_recurrent_gated_delta_rule(rq, rk, rv, rbeta, rg)
    weights = torch.randn_like(o)
    (o * weights).sum().backward()
    (ref_o * weights).sum().backward()
    for mine, ref in zip(chunk_inputs[:5], ref_inputs[:5]):
        torch.testing.assert_close(mine.grad, ref.grad, atol=1e-4, rtol=1e-3)


def test_chunk_size_does_not_change_the_result():
    q, k, v, beta, g, _ = make_inputs(1, 96)
    small, _ = chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=8)
    large, _ = chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=64)
    torch.testing.assert_close(small, large, atol=ATOL, rtol=1e-4)


def test_short_convolution_is_a_causal_sliding_window():
    conv = ShortConvolution(6, kernel_size=4, activation=None)
    x = torch.randn(2, 11, 6)
    y = conv(x)
    w = conv.weight[:, 0]  # [C, K]; the last tap multiplies the current token
    for t in range(11):
        window = x[:, max(0, t - 3) : t + 1]
        taps = w[:, 4 - window.shape[1] :]
        torch.testing.assert_close(y[:, t], (window * taps.T).sum(1), atol=1e-6, rtol=1e-5)


def test_unknown_backend_is_rejected():
    q, k, v, beta, _, _ = make_inputs(1, 8)
    with pytest.raises(ValueError, match="backend must be one of"):
        chunk_delta_rule(q, k, v, beta, backend="cuda")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        chunk_delta_rule(q, k, v, beta, backend="fla")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("op", ["delta", "gated", "ssd"])
def test_fla_kernels_match_the_torch_path_on_cuda(op):
    q, k, v, beta, g, _ = (x.cuda() for x in make_inputs(2, 256, dk=64, dv=64))
    if op == "delta":
        run = lambda backend: chunk_delta_rule(q, k, v, beta, backend=backend)[0]  # noqa: E731
    elif op == "gated":
        run = lambda backend: chunk_gated_delta_rule(q, k, v, g, beta, backend=backend)[0]  # noqa: E731
    else:
        run = lambda backend: chunk_ssd(q, k, v, g, scale=1.0, backend=backend)[0]  # noqa: E731
    torch.testing.assert_close(run("fla").float(), run("torch").float(), atol=2e-3, rtol=2e-3)
