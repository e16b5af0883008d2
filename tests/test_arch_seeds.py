"""Every seed honours the mixer contract: shapes, causality, batch independence, gradients."""

from __future__ import annotations

import pytest
import torch
from fla.ops.attn.naive import naive_parallel_attn

from asiarch.arch import SEEDS, LanguageModel, ModelConfig, contract_violations, count_parameters
from asiarch.arch.layers.attention import rotary
from asiarch.config import load_scale

D, H = 64, 4


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SEEDS[name](D, H, layer_idx=0, chunk_size=16).eval()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_conforms_to_the_contract(name):
    assert contract_violations(SEEDS[name]) == []


@pytest.mark.parametrize("name", sorted(SEEDS))
@pytest.mark.parametrize("batch,length", [(1, 1), (3, 17), (2, 64), (2, 81)])
def test_shape_and_dtype_for_any_batch_and_length(name, batch, length):
    out = build(name)(torch.randn(batch, length, D))
    assert out.shape == (batch, length, D)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_causal_future_tokens_do_not_change_the_past(name):
    mixer = build(name)
    x = torch.randn(2, 50, D)
    k = 23
    perturbed = x.clone()
    perturbed[:, k + 1 :] = torch.randn(2, 50 - k - 1, D)
    with torch.no_grad():
        a, b = mixer(x), mixer(perturbed)
    torch.testing.assert_close(a[:, : k + 1], b[:, : k + 1], atol=1e-5, rtol=1e-5)
    assert (a[:, k + 1 :] - b[:, k + 1 :]).abs().max() > 1e-3  # the perturbation is seen downstream


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_samples_in_a_batch_are_independent(name):
    mixer = build(name)
    x = torch.randn(3, 40, D)
    with torch.no_grad():
        together = mixer(x)
        alone = torch.cat([mixer(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_parameter_gets_a_finite_gradient(name):
    mixer = build(name).train()
    out = mixer(torch.randn(2, 70, D))
    out.square().mean().backward()
    for pname, p in mixer.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in mixer.parameters())


def test_attention_matches_fla_naive_parallel_attention():
    mixer = build("attention")
    x = torch.randn(2, 33, D)
    with torch.no_grad():
        q, k, v = mixer.qkv_proj(x).view(2, 33, 3, H, D // H).unbind(2)
        ref, _ = naive_parallel_attn(rotary(q), rotary(k), v, causal=True)
        expected = mixer.o_proj(ref.reshape(2, 33, D))
        torch.testing.assert_close(mixer(x), expected, atol=1e-5, rtol=1e-5)


def test_rotary_is_a_relative_position_encoding():
    """<rot(q)_i, rot(k)_j> depends only on i - j: the property RoPE exists for."""
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    seq_q, seq_k = q.expand(1, 12, 1, 8).clone(), k.expand(1, 12, 1, 8).clone()
    rq, rk = rotary(seq_q)[0, :, 0], rotary(seq_k)[0, :, 0]
    torch.testing.assert_close(rq[5] @ rk[2], rq[9] @ rk[6], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[4])


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_cpu_tiny_language_model_sizes(name):
    scale = load_scale("cpu_tiny")
    cfg = ModelConfig(**{**scale.model.__dict__, "vocab_size": scale.corpus.tokenizer_vocab_size})
    model = LanguageModel(cfg, SEEDS[name])
    total = count_parameters(model)
    assert 0.5e6 <= total <= 2e6, f"{name} has {total} parameters at cpu_tiny"
    assert model.head.weight is model.embed.weight  # tied head counted once
    assert count_parameters(model, exclude_embeddings=True) == total - cfg.vocab_size * cfg.hidden_size


def test_paper_scale_shapes_are_the_originals():
    explore, verify = load_scale("paper_20m"), load_scale("paper_340m")
    assert (explore.model.num_layers, explore.model.hidden_size, explore.model.num_heads) == (8, 256, 8)
    assert explore.train.seq_len == 2048
    assert (verify.model.num_layers, verify.model.hidden_size) == (24, 1024)


def test_language_model_is_causal_end_to_end():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                                      mixer_kwargs={"chunk_size": 8}), SEEDS["gated_deltanet"]).eval()
    ids = torch.randint(0, 100, (2, 30))
    changed = ids.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 100
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :20], model(changed)[:, :20], atol=1e-5, rtol=1e-5)
