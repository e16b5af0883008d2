"""State-space duality (Mamba2's SSD): a linear recurrence with a scalar, data-dependent decay.

    S_t = exp(g_t) S_{t-1} + k_t v_t^T,    o_t = S_t^T (scale q_t)

Mamba2 maps onto it with q = C, k = B, v = x * dt, g = A * dt, scale = 1 (Dao & Gu, 2024);
flash-linear-attention calls the same operator "simple GLA". Chunkwise: a masked decayed
attention inside each chunk plus a state carried across chunks, so cost is linear in T.
"""

from __future__ import annotations

import torch

from asiarch.arch.ops.backend import pad_to_chunks, use_fla, use_triton
from asiarch.arch.ops.delta_rule import _decay_matrix, _to_chunks


def ssd_chunk_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pure-PyTorch chunkwise SSD on ``[B, T, H, D]`` inputs and ``g [B, T, H]``, in fp32."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    out_dtype = v.dtype
    scale = dk**-0.5 if scale is None else scale
    q, k, v, g = (pad_to_chunks(x.float(), chunk_size) for x in (q, k, v, g))
    q, k, v = (_to_chunks(x, chunk_size) for x in (q * scale, k, v))
    g_cum = _to_chunks(g, chunk_size).cumsum(-1)  # [B, H, N, C]
    intra = ((q @ k.transpose(-1, -2)) * _decay_matrix(g_cum)) @ v

    # The decay is a scalar per step, so each chunk's contribution to the state is one
    # batched matmul; carrying the state across chunks is then two elementwise ops a chunk.
    g_last = g_cum[..., -1:]  # [B, H, N, 1]
    contributions = (k * (g_last - g_cum).exp()[..., None]).transpose(-1, -2) @ v  # [B, H, N, K, V]
    chunk_decay = g_last.exp()[..., None]  # [B, H, N, 1, 1]
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.float()
    chunk_states = []
    for decay_n, contribution_n in zip(chunk_decay.unbind(2), contributions.unbind(2)):  # unbind: linear backward
        chunk_states.append(state)
        state = state * decay_n + contribution_n
    inter = (q * g_cum.exp()[..., None]) @ torch.stack(chunk_states, dim=2)
    o = (intra + inter).movedim(1, 3).reshape(b, -1, h, dv)[:, :t]
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_ssd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scalar-decay linear recurrence; on CUDA it runs fla's ``chunk_simple_gla`` kernel.

    ``backend="triton"`` runs asiarch's own kernel (``asiarch.kernels.ssd``) instead, as does
    ``auto`` on CUDA where fla is not installed; ``chunk_size`` applies to it and the PyTorch
    path (a power of two >= 16 for the kernel).
    """
    if use_triton(q, backend):
        from asiarch.kernels.ssd import ssd_triton

        return ssd_triton(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    if use_fla(q, backend):
        from fla.ops.simple_gla import chunk_simple_gla

        return chunk_simple_gla(
            q, k, v, g=g, scale=scale, initial_state=initial_state, output_final_state=output_final_state
        )
    return ssd_chunk_torch(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
