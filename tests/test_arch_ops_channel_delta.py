"""Channel-gated delta rules (GDN2, KDA): the chunkwise PyTorch path equals fla's naive recurrences
in values and gradients, stays exact under strong decays, and the two seed layers honour the contract."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from fla.ops.gdn2.naive import naive_recurrent_gdn2
from fla.ops.kda.naive import naive_recurrent_kda

from asiarch.arch import contract_violations
from asiarch.arch.layers.deltanet import DeltaNet
from asiarch.arch.layers.gdn2 import GatedDeltaNet2
from asiarch.arch.layers.kda import KimiDeltaAttention
from asiarch.arch.ops import chunk_gdn2, chunk_kda
from asiarch.checks.policy import check_policy
from conftest import requires_cuda

ATOL, RTOL = 1e-5, 1e-4  # outputs and final states, fp32 (observed max |error| ~4e-7)
GRAD_ATOL, GRAD_RTOL = 2e-5, 1e-4  # gradients (observed max |error| ~2e-6)
CUDA_ATOL = 2e-3  # fla's Triton kernels vs the PyTorch path (tf32 matmuls inside the kernels)
CASES = [(2, 1, 16), (2, 37, 16), (1, 37, 64), (1, 130, 16), (2, 130, 64), (1, 45, 12)]  # (B, T, chunk)
LAYERS = [KimiDeltaAttention, GatedDeltaNet2]


def make_inputs(b, t, h=2, dk=16, dv=8, seed=0, decay=0.5, offset=0.0):
    """q, k (unit norm), v, g (per-channel log decay in [-offset - decay, -offset]), b, w, beta, h0."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=gen)
    k = F.normalize(torch.randn(b, t, h, dk, generator=gen), dim=-1)
    v = torch.randn(b, t, h, dv, generator=gen)
    g = -offset - torch.rand(b, t, h, dk, generator=gen) * decay
    erase = torch.rand(b, t, h, dk, generator=gen)
    write = torch.rand(b, t, h, dv, generator=gen)
    beta = torch.rand(b, t, h, generator=gen)
    h0 = torch.randn(b, h, dk, dv, generator=gen) * 0.1
    return {"q": q, "k": k, "v": v, "g": g, "b": erase, "w": write, "beta": beta, "h0": h0}


def leaves(inputs, names):
    return {n: inputs[n].clone().requires_grad_(True) for n in names}


def backprop(o, s, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ((o * torch.randn(o.shape, generator=gen)).sum() + (s * torch.randn(s.shape, generator=gen)).sum()).backward()


def assert_same_run(mine, ref, mine_out, ref_out):
    for a, b in zip(mine_out, ref_out):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    for name in mine:
        assert torch.isfinite(mine[name].grad).all(), name
        torch.testing.assert_close(mine[name].grad, ref[name].grad, atol=GRAD_ATOL, rtol=GRAD_RTOL, msg=name)


def run_gdn2(inputs, chunk):
    names = ["q", "k", "v", "g", "b", "w", "h0"]
    mine, ref = leaves(inputs, names), leaves(inputs, names)
    o, s = chunk_gdn2(*(mine[n] for n in names[:6]), initial_state=mine["h0"], output_final_state=True,
                      chunk_size=chunk)
    ro, rs = naive_recurrent_gdn2(*(ref[n] for n in names[:6]), initial_state=ref["h0"], output_final_state=True)
    backprop(o, s)
    backprop(ro, rs)
    assert_same_run(mine, ref, (o, s), (ro, rs))


def run_kda(inputs, chunk):
    names = ["q", "k", "v", "g", "beta", "h0"]
    mine, ref = leaves(inputs, names), leaves(inputs, names)
    o, s = chunk_kda(*(mine[n] for n in names[:5]), initial_state=mine["h0"], output_final_state=True,
                     chunk_size=chunk)
    ro, rs = naive_recurrent_kda(*(ref[n] for n in names[:5]), initial_state=ref["h0"], output_final_state=True)
    backprop(o, s)
    backprop(ro, rs)
    assert_same_run(mine, ref, (o, s), (ro, rs))


@pytest.mark.parametrize("b,t,chunk", CASES)
def test_gdn2_matches_fla_naive_values_and_gradients(b, t, chunk):
    run_gdn2(make_inputs(b, t), chunk)


@pytest.mark.parametrize("b,t,chunk", CASES)
def test_kda_matches_fla_naive_values_and_gradients(b, t, chunk):
    run_kda(make_inputs(b, t, seed=3), chunk)


@pytest.mark.parametrize("offset,decay", [(4.5, 1.0), (0.0, 40.0)])
def test_strong_decays_stay_finite_and_exact(offset, decay):
    """~-5 per step (64 steps: -320, far past exp's fp32 range), then strong steps mixed with weak ones."""
    inputs = make_inputs(1, 130, seed=5, offset=offset, decay=decay)
    run_gdn2(inputs, 64)
    run_kda(inputs, 64)


def test_kda_is_gdn2_with_a_broadcast_beta():
    x = make_inputs(2, 70, seed=7)
    o, s = chunk_kda(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"], output_final_state=True)
    dk, dv = x["k"].shape[-1], x["v"].shape[-1]
    erase, write = x["beta"][..., None].expand(-1, -1, -1, dk), x["beta"][..., None].expand(-1, -1, -1, dv)
    ro, rs = chunk_gdn2(x["q"], x["k"], x["v"], x["g"], erase, write, initial_state=x["h0"], output_final_state=True)
    torch.testing.assert_close(o, ro, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, rs, atol=ATOL, rtol=RTOL)


def test_chunk_size_does_not_change_the_result_and_dtype_is_kept():
    x = make_inputs(1, 96, seed=9)
    args = (x["q"], x["k"], x["v"], x["g"], x["b"], x["w"])
    small, _ = chunk_gdn2(*args, chunk_size=8)
    large, _ = chunk_gdn2(*args, chunk_size=64)
    torch.testing.assert_close(small, large, atol=ATOL, rtol=RTOL)
    wide, _ = chunk_gdn2(*(a.double() for a in args), chunk_size=32)
    assert wide.dtype == torch.float64  # output in v's dtype (computed in fp32)


def test_fla_backend_needs_cuda():
    x = make_inputs(1, 8)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        chunk_kda(x["q"], x["k"], x["v"], x["g"], x["beta"], backend="fla")
    with pytest.raises(ValueError, match="backend must be one of"):
        chunk_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], backend="cuda")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("op", ["kda", "gdn2"])
def test_fla_kernels_match_the_torch_path_on_cuda(op):
    x = {n: t.cuda() for n, t in make_inputs(2, 256, dk=64, dv=64).items()}
    if op == "kda":
        run = lambda backend: chunk_kda(x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"],  # noqa: E731
                                        output_final_state=True, backend=backend)
    else:
        run = lambda backend: chunk_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"],  # noqa: E731
                                         initial_state=x["h0"], output_final_state=True, backend=backend)
    (o, s), (ro, rs) = run("fla"), run("torch")
    torch.testing.assert_close(o.float(), ro.float(), atol=CUDA_ATOL, rtol=CUDA_ATOL)
    torch.testing.assert_close(s.float(), rs.float(), atol=CUDA_ATOL, rtol=CUDA_ATOL)


# -- the seed layers ---------------------------------------------------------------------------


def build(cls, hidden=32, heads=2, seed=0):
    torch.manual_seed(seed)
    return cls(hidden, heads, layer_idx=0, chunk_size=16)


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_conforms_and_passes_the_static_policy(cls):
    assert contract_violations(cls) == []
    report = check_policy(inspect.getsource(inspect.getmodule(cls)))
    assert report.passed, report.violations


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_is_causal_for_any_length(cls):
    mixer = build(cls).eval()
    x = torch.randn(2, 40, 32)
    cut = 17
    changed = x.clone()
    changed[:, cut + 1 :] = torch.randn(2, 40 - cut - 1, 32)
    with torch.no_grad():
        a, b = mixer(x), mixer(changed)
        assert mixer(x[:, :1]).shape == (2, 1, 32)
    assert a.shape == x.shape and torch.isfinite(a).all()
    torch.testing.assert_close(a[:, : cut + 1], b[:, : cut + 1], atol=1e-5, rtol=1e-5)
    assert (a[:, cut + 1 :] - b[:, cut + 1 :]).abs().max() > 1e-3


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_gives_every_parameter_a_finite_gradient(cls):
    mixer = build(cls).train()
    mixer(torch.randn(2, 37, 32)).square().mean().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None, f"{cls.__name__}.{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{cls.__name__}.{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{cls.__name__}.{name} has an all-zero gradient"


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_stays_within_twice_deltanets_parameters(cls):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(DeltaNet(128, 4)) < count(cls(128, 4)) <= 2 * count(DeltaNet(128, 4))


def test_kda_options_lower_bound_and_negative_eigenvalues():
    torch.manual_seed(0)
    mixer = KimiDeltaAttention(32, 2, chunk_size=16, lower_bound=-5.0, allow_neg_eigval=True)
    out = mixer(torch.randn(1, 20, 32))
    assert torch.isfinite(out).all()
