"""Causal softmax attention with rotary positions: the quadratic reference (Transformer++)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate ``x [B, T, H, D]`` pairwise by position-dependent angles (RoPE, half-split form)."""
    t, d = x.shape[1], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # [T, D/2]
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        layer_idx: int | None = None,
        rope_base: float = 10000.0,
        **kwargs,
    ):
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(f"hidden_size {hidden_size} / num_heads {num_heads} must give an even head size")
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.head_dim = hidden_size // num_heads
        self.rope_base = rope_base
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        q, k, v = self.qkv_proj(hidden_states).view(b, t, 3, self.num_heads, self.head_dim).unbind(2)
        q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.hidden_size))
