"""Gated DeltaProduct (Siems et al., 2025): Gated DeltaNet with several delta steps per token.

Each token writes ``num_householder`` (default 2) key/value pairs, each with its own write
strength, so the state transition is a product of generalised Householder matrices times the
Mamba2-style decay ``g = -exp(A_log) * softplus(a_proj(x) + dt_bias)``. Keys, values and betas
come from projections ``num_householder`` times wider; short convolutions on q/k/v, L2-normalised
q/k, ``beta = 2 sigmoid(.)`` (negative eigenvalues allowed), per-head RMSNorm and a SiLU output
gate, as in Gated DeltaNet.

Parameterisation follows ``fla.layers.gated_deltaproduct.GatedDeltaProduct`` with
``use_forget_gate``, ``use_short_conv``, ``use_output_gate`` and ``allow_neg_eigval`` on. Where
this layer differs:

- Head sizes follow this library's Gated DeltaNet seed: ``head_dim = hidden_size / num_heads``
  and values as wide as keys (fla's defaults: ``head_dim=256``, ``expand_v=2``); no separate
  ``num_v_heads``.
- ``A_log``/``dt_bias`` come from ``init_decay_parameters`` (``A`` uniform in [1, 16]; fla's
  layer draws ``A`` from [0, 16]).
- ``chunk_size`` counts steps of the interleaved sequence (``num_householder`` per token).
- No cache, ``cu_seqlens`` or recurrent inference mode; ``attention_mask`` is ignored (the
  harness only right-pads, which a causal mixer may ignore); the ``o_norm`` with gate is an
  ``nn.RMSNorm`` times ``silu(g)`` (what fla's fused gated norm computes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.ops import ShortConvolution, chunk_gated_delta_product, init_decay_parameters


class GatedDeltaProduct(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        layer_idx: int | None = None,
        conv_size: int = 4,
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        backend: str = "auto",
        num_householder: int = 2,
        **kwargs,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.head_dim = hidden_size // num_heads
        self.chunk_size, self.backend = chunk_size, backend
        self.num_householder = n = num_householder
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size * n, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size * n, bias=False)
        self.b_proj = nn.Linear(hidden_size, num_heads * n, bias=False)
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.A_log, self.dt_bias = init_decay_parameters(num_heads)
        self.q_conv = ShortConvolution(hidden_size, conv_size, activation="silu")
        self.k_conv = ShortConvolution(hidden_size * n, conv_size, activation="silu")
        self.v_conv = ShortConvolution(hidden_size * n, conv_size, activation="silu")
        self.o_norm = nn.RMSNorm(self.head_dim, eps=norm_eps)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, _ = hidden_states.shape
        n, heads = self.num_householder, (b, t, self.num_heads, self.head_dim)
        steps = (b, t * n, self.num_heads, self.head_dim)  # sub-step i of token t at t * n + i
        q = F.normalize(self.q_conv(self.q_proj(hidden_states)).view(heads), p=2, dim=-1)
        k = F.normalize(self.k_conv(self.k_proj(hidden_states)).reshape(steps), p=2, dim=-1)
        v = self.v_conv(self.v_proj(hidden_states)).reshape(steps)
        beta = 2 * self.b_proj(hidden_states).sigmoid().reshape(b, t * n, self.num_heads)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(hidden_states).float() + self.dt_bias)
        o, _ = chunk_gated_delta_product(
            q, k, v, g, beta, num_householder=n, chunk_size=self.chunk_size, backend=self.backend
        )
        gate = F.silu(self.g_proj(hidden_states)).view(heads)
        return self.o_proj((self.o_norm(o) * gate).reshape(b, t, self.hidden_size))
