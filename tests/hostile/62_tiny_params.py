# expect: param_budget
# why: A mixer with a single scalar parameter (causal cumulative mean times a learned scale).
import torch
from torch import nn


class ScalarMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=hidden_states.dtype, device=hidden_states.device)
        return self.scale * hidden_states.cumsum(1) / steps[None, :, None]
