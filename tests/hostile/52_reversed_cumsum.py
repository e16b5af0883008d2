# expect: causality
# why: Reverses time with flip, so each position sums over the future instead of the past.
import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.v(hidden_states)
        t = hidden_states.shape[1]
        counts = torch.arange(t, 0, -1, dtype=v.dtype, device=v.device)
        mixed = v.flip(1).cumsum(1).flip(1) / counts[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
