"""RWKV-7 "Goose" time mixing (Peng et al., 2025): a DPLR delta rule with vector-valued decay.

Per token: a token shift (``x_{t-1} - x_t``) mixed in through six learned lerps feeds the
receptance ``r``, key ``k`` and value ``v`` projections and three low-rank (LoRA) heads: the
per-channel log decay ``w = -e^{-1/2} sigmoid(w0 + tanh(x W1) W2)`` in ``[-0.61, 0]``, the
in-context learning rate ``a = sigmoid(a0 + x A1 A2)`` and the output gate
``g = sigmoid(x G1) G2``. The state update is ``S_t = (Diag(e^{w_t}) - kk_t (kk_t a_t)^T) S_{t-1}
+ k_t v_t^T`` with ``kk`` the L2-normalised removal key ``k * k_k`` and ``k`` rescaled by
``1 + (a - 1) k_a``; the read-out gets a per-head GroupNorm, the bonus ``(r . (k r_k)) v`` and
the gate ``g`` before the output projection.

Parameterisation and initialisation follow ``fla.layers.rwkv7.RWKV7Attention`` (LoRA ranks by
its formula; at hidden 128 with 4 heads: decay 32, ICLR 32, gate 64). Where this layer differs:

- Value residual: fla's layers after the first mix their value with layer 0's ``v_first``
  through a fourth LoRA (``v_lora``). A mixer here sees only its own input, so every layer
  behaves as fla's first layer: its own ``v`` is used and there is no ``v_lora``.
- ``layer_idx=None`` is treated as 0 (fla then skips the RWKV-7 initialisation entirely,
  leaving ``k_k = 0``, i.e. no state edits). The depth-dependent initialisation needs the
  layer count: pass ``num_hidden_layers`` (e.g. in ``mixer_kwargs``); without it each layer
  is initialised as if it were the last (``num_hidden_layers = layer_idx + 1``).
- The LoRAs are plain parameters (``w1, w2, w0`` ...; as in the RWKV-LM reference code) rather
  than fla's ``nn.Sequential`` of ``nn.Linear``, so the harness's re-initialisation of every
  ``nn.Linear`` cannot wipe the decay and learning-rate biases ``w0``/``a0``. The six token-shift
  lerps ``x_r .. x_g`` are the rows of one ``[6, hidden]`` parameter ``x_mix``.
- ``o_proj`` keeps PyTorch's default initialisation instead of zeros, so a lone layer's output
  depends on its input (inside ``LanguageModel`` every ``nn.Linear`` is re-drawn anyway, which
  also replaces the orthogonal ``r/k/v`` initialisation done here).
- Other fla options are fixed at their defaults (``value_dim = hidden``, affine GroupNorm,
  ``fuse_norm=False``); ``head_dim = hidden_size / num_heads`` (fla's ``head_dim`` argument wins
  over ``num_heads`` and defaults to 64).
- The decay ``w`` is computed in fp32; no cache, no ``cu_seqlens``, no recurrent inference mode;
  ``attention_mask`` is ignored (the harness only right-pads, which a causal mixer may ignore).
- The GroupNorm is ``nn.GroupNorm`` (fla's unfused choice), eps ``head_dim * norm_eps`` as in fla.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.ops import chunk_rwkv7

DECAY_SCALE = math.exp(-0.5)  # w = -DECAY_SCALE * sigmoid(.): per-step decay factor in [0.545, 1]


def _lora_rank(hidden_size: int, head_dim: int, multiplier: float, by_head: bool) -> int:
    """fla's LoRA rank formula: ``multiplier * sqrt(hidden)`` (times ``head_dim / 64``), rounded to 32, >= 32."""
    factor = head_dim / 64 if by_head else 1.0
    return max(32, int(round(multiplier * hidden_size**0.5 * factor / 32) * 32))


class RWKV7(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        layer_idx: int | None = None,
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        backend: str = "auto",
        num_hidden_layers: int | None = None,
        decay_low_rank_dim: int | None = None,
        a_low_rank_dim: int | None = None,
        gate_low_rank_dim: int | None = None,
        **kwargs,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.head_dim = hidden_size // num_heads
        self.chunk_size, self.backend = chunk_size, backend
        d, dh = hidden_size, self.head_dim
        rank_w = decay_low_rank_dim or _lora_rank(d, dh, 2.5, by_head=True)
        rank_a = a_low_rank_dim or _lora_rank(d, dh, 2.5, by_head=True)
        rank_g = gate_low_rank_dim or _lora_rank(d, dh, 5.0, by_head=False)

        # Token-shift lerps for r, w, k, v, a, g (one row each).
        self.x_mix = nn.Parameter(torch.zeros(6, d))
        self.k_k = nn.Parameter(torch.zeros(d))
        self.k_a = nn.Parameter(torch.zeros(d))
        self.r_k = nn.Parameter(torch.zeros(num_heads, dh))
        self.r_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        # LoRAs x -> act(x @ X1) @ X2 + X0 for the decay (tanh), in-context learning rate and gate (sigmoid).
        self.w1, self.w2 = nn.Parameter(torch.zeros(d, rank_w)), nn.Parameter(torch.zeros(rank_w, d))
        self.a1, self.a2 = nn.Parameter(torch.zeros(d, rank_a)), nn.Parameter(torch.zeros(rank_a, d))
        self.g1, self.g2 = nn.Parameter(torch.zeros(d, rank_g)), nn.Parameter(torch.zeros(rank_g, d))
        self.w0, self.a0 = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))  # the gate has no bias
        self.g_norm = nn.GroupNorm(num_heads, d, eps=dh * norm_eps)
        self._init_rwkv7(0 if layer_idx is None else layer_idx, num_hidden_layers)

    def _init_rwkv7(self, layer: int, num_layers: int | None) -> None:
        """RWKV-7's depth- and channel-dependent initialisation (as fla's ``_initialize_weights``)."""
        d, dh = self.hidden_size, self.head_dim
        num_layers = layer + 1 if num_layers is None else num_layers
        ratio_0_to_1 = layer / (num_layers - 1) if num_layers > 1 else 0.0
        ratio_1_to_almost0 = 1.0 - layer / num_layers
        n = torch.arange(d, dtype=torch.float32)
        ddd = n / d
        linear = n / max(d - 1, 1) - 0.5
        half = (dh - 1) / 2 or 1.0
        zigzag = ((n % dh) - half) / half
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / max(d - 1, 1)) ** (1 + ratio_0_to_1**0.3)
        with torch.no_grad():
            powers = torch.tensor([0.2, 0.9, 0.7, 0.7, 0.9, 0.2]) * ratio_1_to_almost0  # r, w, k, v, a, g
            self.x_mix.copy_(1.0 - ddd[None, :] ** powers[:, None])
            self.k_k.copy_(0.71 - linear * 0.1)
            self.k_a.fill_(1.02)
            self.r_k.fill_(-0.04)
            self.w0.copy_(www + 0.5 + zigzag * 2.5)
            self.a0.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
            for second in (self.w2, self.a2, self.g2):  # first LoRA factors stay zero
                rank = second.shape[0]
                nn.init.orthogonal_(second, gain=0.1 * (math.sqrt(rank / d) if rank > d else 1.0))
            self.g_norm.weight.fill_(((layer + 1) / num_layers) ** 0.7)
            nn.init.orthogonal_(self.r_proj.weight)
            nn.init.orthogonal_(self.k_proj.weight, gain=0.1)
            nn.init.orthogonal_(self.v_proj.weight)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, d = hidden_states.shape
        heads = (b, t, self.num_heads, self.head_dim)
        x = hidden_states
        shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        xr, xw, xk, xv, xa, xg = (x[:, :, None] + (shifted - x)[:, :, None] * self.x_mix).unbind(2)

        r = self.r_proj(xr).view(heads)
        w = -DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        k = self.k_proj(xk)
        v = self.v_proj(xv).view(heads)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(heads), p=2, dim=-1)
        k = (k * (1 + (a - 1) * self.k_a)).view(heads)
        a = a.view(heads)
        o, _ = chunk_rwkv7(
            r, w.view(heads), k, v, -kk, kk * a, scale=1.0,
            chunk_size=self.chunk_size, backend=self.backend, lower_bound=-DECAY_SCALE,
        )
        o = self.g_norm(o.reshape(b * t, d)).view(b, t, d)
        bonus = ((r * k * self.r_k).sum(-1, keepdim=True) * v).view(b, t, d)
        return self.o_proj((o + bonus) * g)
