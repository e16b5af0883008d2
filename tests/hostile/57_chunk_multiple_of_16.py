# expect: odd_lengths
# why: Chunked cumulative sum that reshapes with .view(B, T // 16, 16, D), silently assuming T is a multiple of the chunk size once T > 16.
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
        v = self.v(hidden_states)
        chunk = min(t, 16)
        blocks = v.view(b, t // chunk, chunk, d)  # fine for T = 48, 64, 96, 128; breaks for T = 37 or 129
        inner = blocks.cumsum(2)
        carry = blocks.sum(2).cumsum(1) - blocks.sum(2)
        total = (inner + carry[:, :, None, :]).reshape(b, t, d)
        steps = torch.arange(1, t + 1, dtype=v.dtype, device=v.device)
        mixed = total / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
