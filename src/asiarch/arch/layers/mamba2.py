"""Mamba2 (Dao & Gu, 2024): a selective state space with a scalar decay per head (SSD).

One input projection gives the gate z, the SSM input x, the shared B and C and the step
dt; a short convolution mixes x/B/C locally; the SSD operator carries the state; a D skip
and a gated RMSNorm finish before the output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.ops import ShortConvolution, chunk_ssd, init_decay_parameters


class Mamba2(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        layer_idx: int | None = None,
        expand: int = 2,
        state_size: int = 16,
        conv_size: int = 4,
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        backend: str = "auto",
        **kwargs,
    ):
        super().__init__()
        self.inner_size = expand * hidden_size
        if self.inner_size % num_heads:
            raise ValueError(f"expand*hidden_size {self.inner_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.head_dim = self.inner_size // num_heads
        self.state_size, self.chunk_size, self.backend = state_size, chunk_size, backend
        self.conv_channels = self.inner_size + 2 * state_size
        self.in_proj = nn.Linear(hidden_size, self.inner_size + self.conv_channels + num_heads, bias=False)
        self.conv = ShortConvolution(self.conv_channels, conv_size, activation="silu", bias=True)
        self.A_log, self.dt_bias = init_decay_parameters(num_heads)
        self.D = nn.Parameter(torch.ones(num_heads))
        self.D._no_weight_decay = True
        self.norm = nn.RMSNorm(self.inner_size, eps=norm_eps)
        self.out_proj = nn.Linear(self.inner_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        z, xbc, dt = self.in_proj(hidden_states).split([self.inner_size, self.conv_channels, self.num_heads], dim=-1)
        x, b_ssm, c_ssm = self.conv(xbc).split([self.inner_size, self.state_size, self.state_size], dim=-1)
        x = x.view(b, t, self.num_heads, self.head_dim)
        dt = F.softplus(dt.float() + self.dt_bias)  # [B, T, H]
        g = -self.A_log.float().exp() * dt
        per_head = (b, t, self.num_heads, self.state_size)
        q = c_ssm.unsqueeze(2).expand(per_head)
        k = b_ssm.unsqueeze(2).expand(per_head)
        y, _ = chunk_ssd(q, k, x * dt.unsqueeze(-1).to(x.dtype), g, scale=1.0, chunk_size=self.chunk_size, backend=self.backend)
        y = y + x * self.D.view(1, 1, -1, 1).to(x.dtype)
        y = self.norm(y.reshape(b, t, self.inner_size) * F.silu(z))
        return self.out_proj(y)
