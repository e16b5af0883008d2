"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2025): the delta rule with a forget gate.

Adds to DeltaNet a data-dependent scalar decay per head (Mamba2-style:
``g = -exp(A_log) * softplus(a_proj(x) + dt_bias)``) and a SiLU output gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.ops import ShortConvolution, chunk_gated_delta_rule, init_decay_parameters


class GatedDeltaNet(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        layer_idx: int | None = None,
        conv_size: int = 4,
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        backend: str = "auto",
        **kwargs,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.head_dim = hidden_size // num_heads
        self.chunk_size, self.backend = chunk_size, backend
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.A_log, self.dt_bias = init_decay_parameters(num_heads)
        self.q_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        self.k_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        self.v_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        self.o_norm = nn.RMSNorm(self.head_dim, eps=norm_eps)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        heads = (b, t, self.num_heads, self.head_dim)
        q = F.normalize(self.q_conv(self.q_proj(hidden_states)).view(heads), p=2, dim=-1)
        k = F.normalize(self.k_conv(self.k_proj(hidden_states)).view(heads), p=2, dim=-1)
        v = self.v_conv(self.v_proj(hidden_states)).view(heads)
        beta = self.b_proj(hidden_states).sigmoid()
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(hidden_states).float() + self.dt_bias)
        o, _ = chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=self.chunk_size, backend=self.backend)
        gate = F.silu(self.g_proj(hidden_states)).view(heads)
        return self.o_proj((self.o_norm(o) * gate).reshape(b, t, self.hidden_size))
