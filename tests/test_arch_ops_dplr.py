"""RWKV-7's DPLR delta rule and the gated delta product: the chunkwise PyTorch paths equal
flash-linear-attention's naive recurrences (values and gradients), and their layers are
causal, trainable, conforming, policy-clean seeds."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from fla.ops.gated_delta_product.naive import naive_recurrent_gated_delta_product
from fla.ops.generalized_delta_rule.dplr.naive import dplr_recurrence

from asiarch.arch import contract_violations
from asiarch.arch.layers import gated_deltaproduct as gdp_module
from asiarch.arch.layers import rwkv7 as rwkv7_module
from asiarch.arch.layers.gated_deltaproduct import GatedDeltaProduct
from asiarch.arch.layers.rwkv7 import RWKV7
from asiarch.arch.ops import chunk_gated_delta_product, chunk_rwkv7
from asiarch.arch.ops.dplr import _sub_chunk_size
from asiarch.checks.policy import check_policy
from conftest import requires_cuda

ATOL, RTOL = 2e-5, 1e-4  # forward values and final states, fp32
GRAD_ATOL, GRAD_RTOL = 1e-4, 1e-3  # gradients (longer fp32 accumulation chains)
STRONG_ATOL, STRONG_RTOL = 1e-4, 1e-3  # per-step log decay down to -5
LAYER_ATOL, LAYER_RTOL = 1e-5, 1e-4
CUDA_BF16_REL_ERR = 2e-2  # fla's bf16 kernels against the fp32 PyTorch path (relative L2 error)
CASES = [(1, 16), (37, 16), (130, 64), (37, 64), (130, 16)]  # (T, chunk)
LAYERS = {"rwkv7": (RWKV7, rwkv7_module), "gated_deltaproduct": (GatedDeltaProduct, gdp_module)}


def bhtd(x):
    return x.transpose(1, 2)


def leaves(tensors):
    return [x.detach().clone().requires_grad_(True) for x in tensors]


def assert_grads_close(mine, ref, atol=GRAD_ATOL, rtol=GRAD_RTOL):
    for i, (m, r) in enumerate(zip(mine, ref)):
        assert m.grad is not None and torch.isfinite(m.grad).all(), f"input {i}: missing or non-finite gradient"
        torch.testing.assert_close(m.grad, r.grad, atol=atol, rtol=rtol, msg=lambda s: f"input {i}: {s}")


# --- DPLR / RWKV-7 -------------------------------------------------------------------------


def dplr_inputs(b, t, h=2, dk=16, dv=8, w_min=-math.exp(-0.5), seed=0):
    """RWKV-7-shaped inputs: a = -kk, b = kk * iclr with kk unit-norm, log decay in [w_min, 0]."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(b, t, h, dk, generator=gen)
    k = torch.randn(b, t, h, dk, generator=gen) * 0.5
    v = torch.randn(b, t, h, dv, generator=gen)
    kk = F.normalize(torch.randn(b, t, h, dk, generator=gen), dim=-1)
    iclr = torch.rand(b, t, h, dk, generator=gen)
    w = torch.rand(b, t, h, dk, generator=gen) * w_min
    h0 = torch.randn(b, h, dk, dv, generator=gen) * 0.3
    return [r, w, k, v, -kk, kk * iclr, h0]


def dplr_reference(r, w, k, v, a, b, h0, scale):
    dk = r.shape[-1]
    # fla's naive recurrence hard-codes the query scale dk**-0.5: undo it.
    o, s = dplr_recurrence(bhtd(r * scale * dk**0.5), bhtd(k), bhtd(v), bhtd(a), bhtd(b), bhtd(w), h0, True)
    return bhtd(o), s


def check_dplr(t, chunk, w_min, atol, rtol, grad_atol, grad_rtol, scale=0.8):
    inputs = dplr_inputs(2, t, w_min=w_min)
    mine, ref = leaves(inputs), leaves(inputs)
    r, w, k, v, a, b, h0 = mine
    o, s = chunk_rwkv7(r, w, k, v, a, b, scale=scale, initial_state=h0, output_final_state=True, chunk_size=chunk)
    ref_o, ref_s = dplr_reference(*ref, scale)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    torch.testing.assert_close(o, ref_o, atol=atol, rtol=rtol)
    torch.testing.assert_close(s, ref_s, atol=atol, rtol=rtol)
    gen = torch.Generator().manual_seed(1)
    wo, ws = torch.randn(o.shape, generator=gen), torch.randn(s.shape, generator=gen)
    ((o * wo).sum() + (s * ws).sum()).backward()
    ((ref_o * wo).sum() + (ref_s * ws).sum()).backward()
    assert_grads_close(mine, ref, grad_atol, grad_rtol)


@pytest.mark.parametrize("t,chunk", CASES)
def test_dplr_matches_fla_naive_values_and_gradients(t, chunk):
    check_dplr(t, chunk, -math.exp(-0.5), ATOL, RTOL, GRAD_ATOL, GRAD_RTOL)


def test_dplr_strong_decay_stays_finite_and_exact():
    """-5 per step sums to -320 over a 64-chunk: a plain e^{-G} factorisation would overflow.
    Below -60 per step the decay is clamped at e^-60, invisible next to the naive result."""
    check_dplr(130, 64, -5.0, STRONG_ATOL, STRONG_RTOL, STRONG_ATOL, STRONG_RTOL)
    check_dplr(37, 16, -100.0, STRONG_ATOL, STRONG_RTOL, STRONG_ATOL, STRONG_RTOL)


def test_dplr_sub_chunks_only_where_the_decay_needs_them():
    g = lambda w_min: dplr_inputs(1, 64, w_min=w_min)[1].cumsum(1).transpose(1, 2)  # noqa: E731  [B, H, C, K]
    assert _sub_chunk_size(g(-math.exp(-0.5)), 64) == 64  # RWKV-7's range: one plain factorisation
    assert 1 < _sub_chunk_size(g(-5.0), 64) < 64


def test_dplr_chunk_size_and_odd_sub_chunks_do_not_change_the_result():
    r, w, k, v, a, b, h0 = dplr_inputs(1, 96)
    outs = [chunk_rwkv7(r, w, k, v, a, b, initial_state=h0, chunk_size=c)[0] for c in (8, 24, 64)]
    torch.testing.assert_close(outs[0], outs[1], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(outs[0], outs[2], atol=ATOL, rtol=RTOL)


def test_dplr_without_initial_state_and_backend_checks():
    r, w, k, v, a, b, _ = dplr_inputs(1, 20)
    o, s = chunk_rwkv7(r, w, k, v, a, b, chunk_size=16)
    ref_o, _ = dplr_reference(r, w, k, v, a, b, None, 1.0)
    assert s is None
    torch.testing.assert_close(o, ref_o, atol=ATOL, rtol=RTOL)
    assert chunk_rwkv7(r, w, k, v.bfloat16(), a, b)[0].dtype == torch.bfloat16  # output in v's dtype
    with pytest.raises(ValueError, match="backend must be one of"):
        chunk_rwkv7(r, w, k, v, a, b, backend="cuda")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        chunk_rwkv7(r, w, k, v, a, b, backend="fla")


# --- Gated delta product -------------------------------------------------------------------


def product_inputs(b, t, n, h=2, dk=16, dv=8, g_min=-1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=gen)
    k = F.normalize(torch.randn(b, t * n, h, dk, generator=gen), dim=-1)
    v = torch.randn(b, t * n, h, dv, generator=gen)
    beta = 2 * torch.rand(b, t * n, h, generator=gen)  # negative eigenvalues allowed, as in the layer
    g = torch.rand(b, t, h, generator=gen) * g_min
    h0 = torch.randn(b, h, dk, dv, generator=gen) * 0.3
    return [q, k, v, g, beta, h0]


def check_product(t, chunk, n, g_min=-1.0, gated=True, atol=ATOL, rtol=RTOL, grad_atol=GRAD_ATOL, grad_rtol=GRAD_RTOL):
    inputs = product_inputs(2, t, n, g_min=g_min)
    if not gated:
        inputs.pop(3)
    mine, ref = leaves(inputs), leaves(inputs)

    def run(fn, q, k, v, *rest, **kw):
        g = rest[0] if gated else None
        beta, h0 = rest[-2:]
        return fn(q, k, v, g, beta, num_householder=n, initial_state=h0, output_final_state=True, **kw)

    o, s = run(chunk_gated_delta_product, *mine, chunk_size=chunk)
    ref_o, ref_s = run(naive_recurrent_gated_delta_product, *ref, scale=inputs[0].shape[-1] ** -0.5)
    torch.testing.assert_close(o, ref_o, atol=atol, rtol=rtol)
    torch.testing.assert_close(s, ref_s, atol=atol, rtol=rtol)
    gen = torch.Generator().manual_seed(1)
    wo, ws = torch.randn(o.shape, generator=gen), torch.randn(s.shape, generator=gen)
    ((o * wo).sum() + (s * ws).sum()).backward()
    ((ref_o * wo).sum() + (ref_s * ws).sum()).backward()
    assert_grads_close(mine, ref, grad_atol, grad_rtol)


@pytest.mark.parametrize("t,chunk", CASES)
def test_delta_product_matches_fla_naive_values_and_gradients(t, chunk):
    check_product(t, chunk, n=2)


def test_delta_product_three_steps_ungated_and_strong_decay():
    check_product(37, 16, n=3)
    check_product(37, 64, n=2, gated=False)
    check_product(130, 64, n=2, g_min=-5.0, atol=STRONG_ATOL, rtol=STRONG_RTOL,
                  grad_atol=STRONG_ATOL, grad_rtol=STRONG_RTOL)


def test_delta_product_rejects_mismatched_steps():
    q, k, v, g, beta, _ = product_inputs(1, 5, 2)
    with pytest.raises(ValueError, match="num_householder"):
        chunk_gated_delta_product(q, k, v, g, beta, num_householder=3)


# --- Layers --------------------------------------------------------------------------------

D, H = 64, 4


def build(name, **kw):
    torch.manual_seed(0)
    return LAYERS[name][0](D, H, layer_idx=0, chunk_size=16, **kw).eval()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_conforms_and_passes_the_static_policy(name):
    cls, module = LAYERS[name]
    assert contract_violations(cls) == []
    report = check_policy(inspect.getsource(module))
    assert report.passed, report.violations


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_is_causal_and_length_agnostic(name):
    mixer = build(name)
    x = torch.randn(2, 41, D)
    cut = 19
    perturbed = x.clone()
    perturbed[:, cut + 1 :] = torch.randn(2, 41 - cut - 1, D)
    with torch.no_grad():
        a, b = mixer(x), mixer(perturbed)
        one = mixer(x[:1, :1])
    torch.testing.assert_close(a[:, : cut + 1], b[:, : cut + 1], atol=LAYER_ATOL, rtol=LAYER_RTOL)
    assert (a[:, cut + 1 :] - b[:, cut + 1 :]).abs().max() > 1e-4  # the future is seen downstream
    torch.testing.assert_close(one, a[:1, :1], atol=LAYER_ATOL, rtol=LAYER_RTOL)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_every_parameter_gets_a_finite_gradient(name):
    mixer = build(name).train()
    with torch.no_grad():  # move off the zero-initialised LoRA factors, whose partners get no gradient at init
        for p in mixer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mixer(torch.randn(2, 37, D)).square().mean().backward()
    for pname, p in mixer.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


def test_rwkv7_equals_fla_layer_math_at_layer_zero():
    """Same output as fla's RWKV7Attention (first layer) built from fla's reference pieces,
    and the same initialisation."""
    from fla.layers.rwkv7 import RWKV7Attention
    from fla.modules.token_shift import token_shift_ref
    from fla.ops.rwkv7.fused_addcmul import torch_addcmul_rwkv7
    from fla.ops.rwkv7.fused_k_update import k_update_ref
    from fla.ops.rwkv7.gate_output_correction import gate_output_correction_ref

    dh = D // H
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = RWKV7Attention(hidden_size=D, head_dim=dh, layer_idx=0, num_hidden_layers=3)
    mine = RWKV7(D, H, layer_idx=0, num_hidden_layers=3, chunk_size=16)
    lerps = [ref.x_r, ref.x_w, ref.x_k, ref.x_v, ref.x_a, ref.x_g]
    pairs = {
        mine.x_mix: torch.cat([x.view(1, D) for x in lerps]), mine.k_k: ref.k_k, mine.k_a: ref.k_a,
        mine.r_k: ref.r_k, mine.w0: ref.w_lora.lora[2].bias, mine.a0: ref.a_lora.lora[2].bias,
        mine.g_norm.weight: ref.g_norm.weight, mine.g_norm.bias: ref.g_norm.bias,
    }
    for p, q in pairs.items():  # initialisation
        torch.testing.assert_close(p, q.detach(), atol=1e-6, rtol=1e-6)
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in ref.parameters())

    with torch.no_grad():  # random weights everywhere, then copy fla's into this layer
        for p in ref.parameters():
            p.copy_(p + 0.1 * torch.randn_like(p))
        pairs[mine.x_mix] = torch.cat([x.view(1, D) for x in lerps])  # the lerps moved
        for p, q in pairs.items():
            p.copy_(q.view(p.shape))
        for name in ("r_proj", "k_proj", "v_proj", "o_proj"):
            getattr(mine, name).weight.copy_(getattr(ref, name).weight)
        for prefix, lora in (("w", ref.w_lora), ("a", ref.a_lora), ("g", ref.g_lora)):
            getattr(mine, prefix + "1").copy_(lora.lora[0].weight.T)
            getattr(mine, prefix + "2").copy_(lora.lora[2].weight.T)

    x = torch.randn(2, 23, D)
    with torch.no_grad():
        heads = lambda y: y.unflatten(-1, (H, dh))  # noqa: E731
        xr, xw, xk, xv, xa, xg = torch_addcmul_rwkv7(x, token_shift_ref(x), *lerps)
        r, v = heads(ref.r_proj(xr)), heads(ref.v_proj(xv))
        w = -0.6065306597126334 * ref.w_lora(xw).sigmoid()
        k, a, g = ref.k_proj(xk), ref.a_lora(xa).sigmoid(), ref.g_lora(xg)
        kk = F.normalize(heads(k * ref.k_k), dim=-1)
        k = heads(k_update_ref(k, a, ref.k_a))
        o, _ = dplr_reference(r, heads(w), k, v, -kk, kk * heads(a), None, 1.0)
        o = ref.g_norm(o.reshape(-1, D)).view(2, 23, D)
        expected = ref.o_proj(gate_output_correction_ref(o, r, k, ref.r_k, v, g))
        torch.testing.assert_close(mine(x), expected, atol=LAYER_ATOL, rtol=LAYER_RTOL)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_parameter_budget_at_hidden_128(name):
    deltanet = 4 * 128 * 128 + 128 * 4 + 3 * 128 * 4 + 32
    layer = LAYERS[name][0](128, 4, layer_idx=0)
    assert sum(p.numel() for p in layer.parameters()) <= 2 * deltanet


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("op", ["rwkv7", "delta_product"])
def test_fla_kernels_match_the_torch_path_on_cuda(op):
    if op == "rwkv7":
        r, w, k, v, a, b, _ = (x.cuda() for x in dplr_inputs(2, 256, dk=64, dv=64))
        run = lambda backend, dt: chunk_rwkv7(*(x.to(dt) for x in (r, w, k, v, a, b)), backend=backend)[0]  # noqa: E731
    else:
        q, k, v, g, beta, _ = (x.cuda() for x in product_inputs(2, 256, 2, dk=64, dv=64))
        run = lambda backend, dt: chunk_gated_delta_product(  # noqa: E731
            q.to(dt), k.to(dt), v.to(dt), g, beta.to(dt), num_householder=2, backend=backend
        )[0]
    fla_out, torch_out = run("fla", torch.bfloat16).float(), run("torch", torch.float32)
    assert torch.isfinite(fla_out).all()
    assert (fla_out - torch_out).norm() / torch_out.norm() < CUDA_BF16_REL_ERR
