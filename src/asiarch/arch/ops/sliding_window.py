"""Causal sliding-window softmax attention: each token attends to itself and the previous W - 1.

    o_t = sum_j softmax_j(scale q_t . k_j) v_j    over    max(0, t - W + 1) <= j <= t

Cost is O(T W) rather than O(T^2). The PyTorch path runs blocks of W queries against the
2W keys of their block and the one before (batched matmuls, band mask) and runs anywhere; on
CUDA tensors the Triton kernel in ``asiarch.kernels`` (online softmax, window-banded tiles)
runs instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asiarch.arch.ops.backend import pad_to_chunks, use_triton


def sliding_window_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float | None = None
) -> torch.Tensor:
    """Pure-PyTorch sliding-window attention on ``q, k [B, T, H, K]``, ``v [B, T, H, V]``.

    Blocked: the queries of each block of ``W`` positions see the keys of their own block and
    the one before it (``2W`` keys, one batched matmul), masked to the band ``t - W < j <= t``;
    so the cost is O(T W) in matmuls, with no per-query copy of its window. Computed in the
    promoted dtype of the three inputs; returned in ``v``'s dtype.
    """
    b, t, h, dk = q.shape
    w = int(window)
    if w < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    scale = dk**-0.5 if scale is None else scale
    out_dtype = v.dtype
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = (pad_to_chunks(x.to(dtype), w) for x in (q, k, v))
    n = q.shape[1] // w
    q, k, v = (x.reshape(b, n, w, h, x.shape[-1]).permute(0, 3, 1, 2, 4) for x in (q, k, v))  # [B, H, N, W, D]
    k2, v2 = (torch.cat([F.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1], x], dim=3) for x in (k, v))  # [B, H, N, 2W, D]
    scores = (q @ k2.transpose(-1, -2)) * scale  # [B, H, N, W, 2W]
    i = torch.arange(w, device=q.device).view(w, 1)
    j = torch.arange(2 * w, device=q.device).view(1, 2 * w)
    band = (j > i) & (j <= i + w)  # key j of the pair sits at block offset j - W: the W positions ending at i
    first = band & (j >= w)  # block 0 has no block before it
    allowed = torch.stack([first, *[band] * (n - 1)])  # [N, W, 2W]
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = scores.softmax(dim=-1) @ v2  # [B, H, N, W, V]
    return o.permute(0, 2, 3, 1, 4).reshape(b, n * w, h, -1)[:, :t].to(out_dtype)


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
