# expect: complexity
# why: Full causal softmax attention materialising a [B, H, T, T] score matrix, presented as a 'linear' mixer.
import torch
from torch import nn
import math


class LinearishAttention(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.num_heads = num_heads

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        """Linear-time mixing (it is not: the score matrix is T x T)."""
        b, t, d = hidden_states.shape
        h = self.num_heads
        q = self.q(hidden_states).view(b, t, h, d // h).transpose(1, 2)
        k = self.k(hidden_states).view(b, t, h, d // h).transpose(1, 2)
        v = self.v(hidden_states).view(b, t, h, d // h).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        future = torch.ones(t, t, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, t, d))
