# expect: param_budget
# why: Hides a 64x up-projection (Linear(D, 64*D) and back), about 33x the DeltaNet parameter count.
import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.up = nn.Linear(hidden_size, 64 * hidden_size, bias=False)
        self.down = nn.Linear(64 * hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.down(torch.relu(self.up(self.v(hidden_states))))
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
