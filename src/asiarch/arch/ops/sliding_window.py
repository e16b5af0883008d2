"""Causal sliding-window softmax attention: each token attends to itself and the previous W - 1.

    o_t = sum_j softmax_j(scale q_t . k_j) v_j    over    max(0, t - W + 1) <= j <= t

Cost is O(T W) rather than O(T^2). The PyTorch path gathers each token's window with
``unfold`` (a view, no copy of the keys per query) and runs anywhere; on CUDA tensors the
Triton kernel in ``asiarch.kernels`` (online softmax, window-banded tiles) runs instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asiarch.arch.ops.backend import use_triton


def sliding_window_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float | None = None
) -> torch.Tensor:
    """Pure-PyTorch sliding-window attention on ``q, k [B, T, H, K]``, ``v [B, T, H, V]``.

    Computed in the promoted dtype of the three inputs; returned in ``v``'s dtype.
    """
    t, w = q.shape[1], int(window)
    if w < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out_dtype = v.dtype
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = (x.to(dtype) for x in (q, k, v))
    k_win = F.pad(k, (0, 0, 0, 0, w - 1, 0)).unfold(1, w, 1)  # [B, T, H, K, W]
    v_win = F.pad(v, (0, 0, 0, 0, w - 1, 0)).unfold(1, w, 1)  # [B, T, H, V, W]
    scores = torch.einsum("bthk,bthkw->bthw", q, k_win) * scale
    pos = torch.arange(t, device=q.device).view(t, 1) + torch.arange(w, device=q.device).view(1, w)
    scores = scores.masked_fill((pos < w - 1).view(1, t, 1, w), float("-inf"))  # before the sequence start
    return torch.einsum("bthw,bthvw->bthv", scores.softmax(dim=-1), v_win).to(out_dtype)


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal softmax attention over the last ``window`` tokens; ``scale`` defaults to ``K ** -0.5``.

    On CUDA tensors ``auto`` runs asiarch's Triton kernel (flash-linear-attention has none
    for this operator, so ``fla`` does too); ``torch`` forces the PyTorch path.
    """
    if backend == "fla":  # no fla kernel for this operator: the CUDA kernel is asiarch's
        backend = "triton"
    if use_triton(q, backend, prefer=True):
        from asiarch.kernels.sliding_window import sliding_window_attention_triton

        return sliding_window_attention_triton(q, k, v, window, scale)
    return sliding_window_torch(q, k, v, window, scale)
