# expect: training_smoke
# why: Returns a learned bias broadcast to the input shape; the budget is met with unused Linears, and the output ignores the input.
import torch
from torch import nn


class ConstantMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return self.bias.expand_as(hidden_states)
