"""asiarch's own Triton kernels (installed as ``asiarch.kernels``), each a differentiable op.

- :func:`ssd_triton` (``kernels/ssd.py``): the chunked scalar-decay linear recurrence (Mamba2's
  SSD, fla's "simple GLA"), forward and backward, including the initial and final states.
- :func:`sliding_window_attention_triton` (``kernels/sliding_window.py``): causal softmax
  attention over the last ``W`` tokens with an online softmax, forward and backward.

The operators in ``asiarch.arch.ops`` dispatch here on CUDA tensors (``chunk_ssd`` with
``backend="triton"``, ``sliding_window_attention`` under ``auto``); their PyTorch paths are
the references the tests compare against. Each module's docstring derives its math.
Importing needs Triton but no GPU; to run the kernels on the CPU (slowly, for tests), set
``TRITON_INTERPRET=1`` before these modules are first imported: ``triton.jit`` reads it when
the kernels are defined.
"""

from asiarch.kernels.sliding_window import sliding_window_attention_triton
from asiarch.kernels.ssd import ssd_triton

__all__ = ["sliding_window_attention_triton", "ssd_triton"]
