# expect: finite_gradients
# why: 'Safe' division with torch.where hides 0/0 in forward, but the masked branch still back-propagates NaN.
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
        counts = torch.arange(0, hidden_states.shape[1], dtype=v.dtype, device=v.device)[None, :, None]
        prefix = v.cumsum(1) - v  # sum of strictly earlier tokens; 0 at t = 0
        mixed = torch.where(counts > 0, prefix / counts, torch.zeros_like(prefix)) + v
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
