# expect: shape
# why: forward uses an attribute the constructor never set, so it raises AttributeError.
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
        b, t, d = hidden_states.shape
        v = self.v(hidden_states).view(b, t, self.num_heads, d // self.num_heads)
        steps = torch.arange(1, t + 1, dtype=v.dtype, device=v.device)
        mixed = (v.cumsum(1) / steps[None, :, None, None]).reshape(b, t, d)
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
