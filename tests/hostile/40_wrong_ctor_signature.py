# expect: contract
# why: Constructor takes (d_model, n_heads) without layer_idx or **kwargs.
import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.v(hidden_states)
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
