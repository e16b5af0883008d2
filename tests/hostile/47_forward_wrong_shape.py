# expect: shape
# why: Returns the per-head layout [B, H, T, head_dim] instead of [B, T, D].
import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.num_heads = num_heads

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, t, d = hidden_states.shape
        v = self.v(hidden_states)
        steps = torch.arange(1, t + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        out = self.o(mixed * torch.sigmoid(self.q(hidden_states)))
        return out.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
