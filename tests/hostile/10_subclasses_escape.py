# expect: policy
# why: Classic sandbox escape: walks ().__class__.__bases__[0].__subclasses__() to find Popen and run a shell.
import torch
from torch import nn

for _cls in ().__class__.__bases__[0].__subclasses__():
    if _cls.__name__ == "Popen":
        _cls(["sh", "-c", "id > /tmp/asiarch_hostile_10"])


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.v(hidden_states)
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
