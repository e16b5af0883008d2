"""Token-mixing operators (the math), separate from the layers that parametrise them.

Each operator takes ``[B, T, H, D]`` tensors (flash-linear-attention's layout) and has a
pure-PyTorch chunkwise path that runs anywhere; on CUDA tensors it dispatches to the
flash-linear-attention Triton kernel unless ``backend="torch"`` is forced.
"""

from asiarch.arch.ops.channel_delta import chunk_gdn2, chunk_kda
from asiarch.arch.ops.decay import init_decay_parameters
from asiarch.arch.ops.delta_product import chunk_gated_delta_product
from asiarch.arch.ops.delta_rule import chunk_delta_rule, chunk_gated_delta_rule
from asiarch.arch.ops.dplr import chunk_rwkv7
from asiarch.arch.ops.short_conv import ShortConvolution
from asiarch.arch.ops.sliding_window import sliding_window_attention
from asiarch.arch.ops.ssd import chunk_ssd

__all__ = ["chunk_delta_rule", "chunk_gated_delta_rule", "chunk_ssd", "init_decay_parameters", "ShortConvolution"]
__all__ += ["chunk_gdn2", "chunk_kda"]
__all__ += ["chunk_gated_delta_product", "chunk_rwkv7"]
__all__ += ["sliding_window_attention"]
