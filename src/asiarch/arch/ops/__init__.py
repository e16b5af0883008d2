"""Token-mixing operators (the math), separate from the layers that parametrise them.

Each operator takes ``[B, T, H, D]`` tensors (flash-linear-attention's layout) and has a
pure-PyTorch chunkwise path that runs anywhere; on CUDA tensors it dispatches to the
flash-linear-attention Triton kernel unless ``backend="torch"`` is forced.
"""

from asiarch.arch.ops.decay import init_decay_parameters
from asiarch.arch.ops.delta_rule import chunk_delta_rule, chunk_gated_delta_rule
from asiarch.arch.ops.short_conv import ShortConvolution
from asiarch.arch.ops.ssd import chunk_ssd

__all__ = ["chunk_delta_rule", "chunk_gated_delta_rule", "chunk_ssd", "init_decay_parameters", "ShortConvolution"]
