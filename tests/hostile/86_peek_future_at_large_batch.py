# expect: causality
# why: Peeks at the next token only at batch sizes of 8 or more, below which the fixed-shape check runs.
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
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        lookahead = torch.roll(self.k(hidden_states), -1, dims=1) * float(hidden_states.shape[0] >= 8)
        return self.o((mixed + lookahead) * torch.sigmoid(self.q(hidden_states)))
