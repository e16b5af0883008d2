"""Gated DeltaNet-2 (NVIDIA, "Decoupling Erase and Write in Linear Attention"): KDA, gates split.

KDA's scalar ``beta`` both erases the old value at key k and writes the new one. GDN2 splits
it into an erase gate ``b = sigmoid(b_proj(x))`` per key channel and a write gate
``w = sigmoid(w_proj(x))`` per value channel:
``S_t = (I - k_t (b_t * k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t * v_t)^T``. The decay per key
channel is KDA's, ``g = -exp(A_log) * softplus(f_proj(x) + dt_bias)``, with ``f_proj`` low rank;
q and k pass a short convolution + SiLU and are L2-normalised; the output is RMS-normalised per
head and gated by ``sigmoid(g_proj(x))`` (low rank, with a bias) before ``o_proj``.

Follows ``fla.layers.gdn2.GatedDeltaNet2`` in parameters and initialisation, except: no cache or
recurrent inference mode, no padding masks or packed sequences (``attention_mask`` is accepted
and ignored), no grouped value heads (``num_v_heads``) or ``expand_v`` (the head dim is
``hidden_size // num_heads`` for keys and values); q/k are L2-normalised with ``F.normalize``
rather than inside the kernel; the gated RMSNorm is ``nn.RMSNorm`` times a sigmoid gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.ops import ShortConvolution, chunk_gdn2, init_decay_parameters


class GatedDeltaNet2(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        layer_idx: int | None = None,
        conv_size: int = 4,
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        backend: str = "auto",
        allow_neg_eigval: bool = False,
        **kwargs,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.head_dim = hidden_size // num_heads
        self.chunk_size, self.backend = chunk_size, backend
        self.allow_neg_eigval = allow_neg_eigval
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.q_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        self.k_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        self.v_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        # Decay per key channel through a rank-head_dim bottleneck.
        self.f_proj = nn.Sequential(
            nn.Linear(hidden_size, self.head_dim, bias=False), nn.Linear(self.head_dim, hidden_size, bias=False)
        )
        self.b_proj = nn.Linear(hidden_size, hidden_size, bias=False)  # erase gate, per key channel
        self.w_proj = nn.Linear(hidden_size, hidden_size, bias=False)  # write gate, per value channel
        self.A_log, _ = init_decay_parameters(num_heads)  # one rate per head
        _, self.dt_bias = init_decay_parameters(hidden_size)  # one softplus bias per key channel
        self.g_proj = nn.Sequential(
            nn.Linear(hidden_size, self.head_dim, bias=False), nn.Linear(self.head_dim, hidden_size, bias=True)
        )
        self.o_norm = nn.RMSNorm(self.head_dim, eps=norm_eps)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        heads = (b, t, self.num_heads, self.head_dim)
        q = F.normalize(self.q_conv(self.q_proj(hidden_states)).view(heads), p=2, dim=-1)
        k = F.normalize(self.k_conv(self.k_proj(hidden_states)).view(heads), p=2, dim=-1)
        v = self.v_conv(self.v_proj(hidden_states)).view(heads)
        f = (self.f_proj(hidden_states).float() + self.dt_bias).view(heads)
        g = -self.A_log.float().exp()[:, None] * F.softplus(f)
        erase = self.b_proj(hidden_states).sigmoid().view(heads)
        if self.allow_neg_eigval:
            erase = erase * 2.0
        write = self.w_proj(hidden_states).sigmoid().view(heads)
        o, _ = chunk_gdn2(q, k, v, g, erase, write, chunk_size=self.chunk_size, backend=self.backend)
        gate = torch.sigmoid(self.g_proj(hidden_states)).view(heads)
        return self.o_proj((self.o_norm(o) * gate).reshape(b, t, self.hidden_size))
