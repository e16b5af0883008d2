# expect: causality
# why: Causal softmax attention (quadratic) below 512 tokens and a linear causal mean from 512, where the complexity sweep starts: causal at every single length, but its outputs for a prefix depend on the sequence's length.
import torch
from torch import nn


class SwitchingMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        q, k, v = self.q(hidden_states), self.k(hidden_states), self.v(hidden_states)
        length = hidden_states.shape[1]
        if length < 512:
            scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
            future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
            mixed = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
        else:
            steps = torch.arange(1, length + 1, dtype=v.dtype, device=v.device)
            mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed)
