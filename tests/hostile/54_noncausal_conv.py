# expect: causality
# why: Depthwise Conv1d with symmetric padding (kernel 3, padding 1) sees one future token.
import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.conv = nn.Conv1d(hidden_size, hidden_size, kernel_size=3, padding=1, groups=hidden_size)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.v(hidden_states)
        v = self.conv(v.transpose(1, 2)).transpose(1, 2)
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
