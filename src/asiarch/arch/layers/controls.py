"""Control mixers whose rank against the seeds is known by construction or from the literature.

They calibrate a scale (``benchmarks/bench_fidelity.py``): a fidelity that cannot put
``NoMixing`` below DeltaNet, or plain linear attention below DeltaNet on recall, cannot
steer a search. None of them is a seed a campaign must beat.

- ``NoMixing``: every position sees only itself (a gated position-wise projection). It
  cannot use context at all: any mixer that can must beat it on loss and on recall.
- ``CausalMean``: the uniform average of the past values. It mixes, but its output does
  not depend on which key a query matches, so associative recall stays at chance.
- ``LinearAttention``: causal linear attention with the elu+1 feature map (Katharopoulos
  et al., 2020), no decay, no delta rule. Computed in its masked parallel form
  ``(phi(Q) phi(K)^T * causal) V`` normalised by ``phi(Q) sum phi(K)``: the same function as
  the recurrent form, quadratic in time but fast at the short lengths it is trained on.
  DeltaNet (Yang et al., 2024) and Zoology (Arora et al., 2023) show it recalls worse
  than the delta rule and than softmax attention.
- ``DeltaNetNoConv``: the DeltaNet seed without its short convolutions (their SiLU kept);
  the DeltaNet paper's ablation finds the convolutions help.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.layers.deltanet import DeltaNet


class NoMixing(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int | None = None, **kwargs):
        super().__init__()
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.o_proj(self.v_proj(hidden_states) * F.silu(self.g_proj(hidden_states)))


class CausalMean(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int | None = None, **kwargs):
        super().__init__()
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        v = self.v_proj(hidden_states)
        counts = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype).view(1, -1, 1)
        return self.o_proj(v.cumsum(dim=1) / counts)


class LinearAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int | None = None, eps: float = 1e-6, **kwargs):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.eps = num_heads, hidden_size // num_heads, eps
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        b, t, d = hidden_states.shape
        heads = (b, t, self.num_heads, self.head_dim)
        q = F.elu(self.q_proj(hidden_states).view(heads)).add(1).transpose(1, 2)  # [B, H, T, Dh]
        k = F.elu(self.k_proj(hidden_states).view(heads)).add(1).transpose(1, 2)
        v = self.v_proj(hidden_states).view(heads).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).tril()  # causal: position i sees j <= i
        out = (scores @ v) / (scores.sum(dim=-1, keepdim=True) + self.eps)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class DeltaNetNoConv(DeltaNet):
    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int | None = None, **kwargs):
        super().__init__(hidden_size, num_heads, layer_idx, **kwargs)
        self.q_conv, self.k_conv, self.v_conv = nn.SiLU(), nn.SiLU(), nn.SiLU()


CONTROLS: dict[str, type[nn.Module]] = {
    "no_mixing": NoMixing,
    "causal_mean": CausalMean,
    "linear_attention": LinearAttention,
    "deltanet_noconv": DeltaNetNoConv,
}
