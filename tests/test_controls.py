"""The fidelity ladder's control mixers: the contract, causality, and each one's defining property."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asiarch.arch.layers.controls import CONTROLS, CausalMean, DeltaNetNoConv, LinearAttention, NoMixing

D, H = 32, 4


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_keeps_the_shape_and_is_causal(name):
    torch.manual_seed(0)
    mixer = CONTROLS[name](D, H, layer_idx=0)
    x = torch.randn(2, 19, D)
    y = mixer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    changed = x.clone()
    changed[:, 11:] = torch.randn(2, 8, D)  # the future after position 10
    assert torch.allclose(mixer(changed)[:, :11], y[:, :11], atol=1e-5)
    assert not torch.allclose(mixer(changed)[:, 11:], y[:, 11:])


def test_no_mixing_sees_only_its_own_position():
    mixer = NoMixing(D, H)
    x = torch.randn(1, 9, D)
    changed = x.clone()
    changed[:, 3] += 1.0
    diff = (mixer(changed) - mixer(x)).abs().sum(-1)[0]
    assert diff[3] > 0 and diff[[0, 1, 2, 4, 5, 6, 7, 8]].max() == 0


def test_causal_mean_is_the_running_mean_of_the_values():
    mixer = CausalMean(D, H)
    x = torch.randn(2, 7, D)
    v = mixer.v_proj(x)
    expected = torch.stack([v[:, : t + 1].mean(dim=1) for t in range(7)], dim=1)
    assert torch.allclose(mixer(x), mixer.o_proj(expected), atol=1e-5)


def test_linear_attention_equals_its_recurrent_form():
    torch.manual_seed(1)
    mixer = LinearAttention(D, H)
    x = torch.randn(2, 11, D)
    b, t, dh = 2, 11, D // H
    q = (F.elu(mixer.q_proj(x)) + 1).view(b, t, H, dh)
    k = (F.elu(mixer.k_proj(x)) + 1).view(b, t, H, dh)
    v = mixer.v_proj(x).view(b, t, H, dh)
    state, norm, outs = torch.zeros(b, H, dh, dh), torch.zeros(b, H, dh), []
    for i in range(t):  # S_t = S_{t-1} + k_t v_t^T, z_t = z_{t-1} + k_t, o_t = q_t S_t / (q_t . z_t)
        state = state + k[:, i, :, :, None] * v[:, i, :, None, :]
        norm = norm + k[:, i]
        num = torch.einsum("bhd,bhde->bhe", q[:, i], state)
        outs.append(num / (torch.einsum("bhd,bhd->bh", q[:, i], norm)[..., None] + mixer.eps))
    expected = mixer.o_proj(torch.stack(outs, dim=1).reshape(b, t, D))
    assert torch.allclose(mixer(x), expected, atol=1e-5)


def test_deltanet_without_convolution_has_no_temporal_kernel():
    mixer = DeltaNetNoConv(D, H)
    assert not any("conv" in name for name, _ in mixer.named_parameters())
    assert all(isinstance(m, torch.nn.SiLU) for m in (mixer.q_conv, mixer.k_conv, mixer.v_conv))
