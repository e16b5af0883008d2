"""Causal sliding-window softmax attention in Triton: forward (online softmax) and backward.

Token ``i`` attends to the ``W`` most recent tokens, itself included:

    s_ij = scale (q_i . k_j)   for  max(0, i - W + 1) <= j <= i
    p_ij = exp(s_ij - lse_i),  lse_i = log sum_j exp(s_ij),    o_i = sum_j p_ij v_j

with ``q, k [B, T, H, K]`` and ``v [B, T, H, V]``. The reference is
``asiarch.arch.ops.sliding_window.sliding_window_torch``. A per-head temperature (the
rendered candidates' ``exp(local_log_temp)``) is applied by passing ``q * temperature`` and
``scale=1``; autograd then carries the gradient to the temperature.

Forward
-------
One program per block of ``BM`` queries visits only the key blocks that intersect the
window band ``[i0 - W + 1, i0 + BM - 1]``: cost ``O(T (W + BM) (K + V))``, not ``O(T^2)``.
It keeps the running maximum ``m_i``, the running normaliser ``l_i`` and the unnormalised
output; a new key block with scores ``s`` updates them as

    m' = max(m, max_j s_ij),   l' = exp(m - m') l + sum_j exp(s_ij - m'),
    acc' = exp(m - m') acc + sum_j exp(s_ij - m') v_j

and finally ``o_i = acc_i / l_i`` and ``lse_i = m_i + log l_i`` (kept for backward). Masked
scores are ``-inf``, so their weights are exactly 0; ``m`` starts at a large finite negative
number, so a block that is entirely masked for a row never forms ``-inf - (-inf)``.

Backward
--------
With ``p`` recomputed from ``lse`` and ``delta_i = do_i . o_i`` (``= sum_j p_ij dp_ij``):

    dv_j = sum_i p_ij do_i,    dp_ij = do_i . v_j,    ds_ij = p_ij (dp_ij - delta_i),
    dq_i = scale sum_j ds_ij k_j,    dk_j = scale sum_i ds_ij q_i

One kernel owns a block of keys and walks the queries whose windows reach it (``dk``,
``dv``); another owns a block of queries and walks their keys (``dq``); no atomics. The
products accumulate in fp32 (IEEE fp32 for fp32 inputs, TF32 otherwise); ``lse`` and
``delta`` are fp32. Head sizes up to 256 (one tile each, padded to a power of two >= 16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["sliding_window_attention_triton"]

_SWA_MAX_HEAD_DIM = 256


@triton.jit
def _swa_scores(q, k, rows, cols, scale, T, W, PREC: tl.constexpr):
    """Scaled scores of a query tile against a key tile, ``-inf`` outside the causal window."""
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale
    inside = (cols[None, :] <= rows[:, None]) & (cols[None, :] > rows[:, None] - W) & (cols[None, :] < T)
    return tl.where(inside, s, float("-inf"))


@triton.jit
def _swa_forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, scale, T, W,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = i_m * BM + tl.arange(0, BM)
    ok, ov = tl.arange(0, BK), tl.arange(0, BV)
    q = tl.load(q_ptr + ((i_b * T + rows[:, None]) * H + i_h) * K + ok[None, :],
                mask=(rows[:, None] < T) & (ok[None, :] < K), other=0.0).to(tl.float32)
    m = tl.full([BM], -1.0e30, dtype=tl.float32)
    norm = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BV], dtype=tl.float32)
    start = tl.maximum(i_m * BM - W + 1, 0)
    start = (start // BN) * BN
    stop = tl.minimum((i_m + 1) * BM, T)
    for j0 in range(start, stop, BN):
        cols = j0 + tl.arange(0, BN)
        k = tl.load(k_ptr + ((i_b * T + cols[:, None]) * H + i_h) * K + ok[None, :],
                    mask=(cols[:, None] < T) & (ok[None, :] < K), other=0.0).to(tl.float32)
        v = tl.load(v_ptr + ((i_b * T + cols[:, None]) * H + i_h) * V + ov[None, :],
                    mask=(cols[:, None] < T) & (ov[None, :] < V), other=0.0).to(tl.float32)
        s = _swa_scores(q, k, rows, cols, scale, T, W, PREC)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        norm = norm * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
        m = m_new
    safe_norm = tl.where(norm > 0, norm, 1.0)  # only rows past T have no key at all
    o = acc / safe_norm[:, None]
    row_mask = rows < T
    tl.store(o_ptr + ((i_b * T + rows[:, None]) * H + i_h) * V + ov[None, :], o.to(o_ptr.dtype.element_ty),
             mask=row_mask[:, None] & (ov[None, :] < V))
    tl.store(lse_ptr + (i_b * T + rows) * H + i_h, m + tl.log(safe_norm), mask=row_mask)


@triton.jit
def _swa_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, scale, T, W,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    cols = i_n * BN + tl.arange(0, BN)
    ok, ov = tl.arange(0, BK), tl.arange(0, BV)
    col_mask = cols < T
    k = tl.load(k_ptr + ((i_b * T + cols[:, None]) * H + i_h) * K + ok[None, :],
                mask=col_mask[:, None] & (ok[None, :] < K), other=0.0).to(tl.float32)
    v = tl.load(v_ptr + ((i_b * T + cols[:, None]) * H + i_h) * V + ov[None, :],
                mask=col_mask[:, None] & (ov[None, :] < V), other=0.0).to(tl.float32)
    dk = tl.zeros([BN, BK], dtype=tl.float32)
    dv = tl.zeros([BN, BV], dtype=tl.float32)
    start = ((i_n * BN) // BM) * BM
    stop = tl.minimum((i_n + 1) * BN + W - 1, T)  # the last query whose window reaches this block, + 1
    for i0 in range(start, stop, BM):
        rows = i0 + tl.arange(0, BM)
        row_mask = rows < T
        q = tl.load(q_ptr + ((i_b * T + rows[:, None]) * H + i_h) * K + ok[None, :],
                    mask=row_mask[:, None] & (ok[None, :] < K), other=0.0).to(tl.float32)
        do = tl.load(do_ptr + ((i_b * T + rows[:, None]) * H + i_h) * V + ov[None, :],
                     mask=row_mask[:, None] & (ov[None, :] < V), other=0.0).to(tl.float32)
        lse = tl.load(lse_ptr + (i_b * T + rows) * H + i_h, mask=row_mask, other=0.0)
        delta = tl.load(delta_ptr + (i_b * T + rows) * H + i_h, mask=row_mask, other=0.0)
        s = _swa_scores(q, k, rows, cols, scale, T, W, PREC)
        p = tl.where(row_mask[:, None], tl.exp(s - lse[:, None]), 0.0)
        dv += tl.dot(tl.trans(p), do, input_precision=PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds), q, input_precision=PREC)
    tl.store(dk_ptr + ((i_b * T + cols[:, None]) * H + i_h) * K + ok[None, :], (dk * scale).to(dk_ptr.dtype.element_ty),
             mask=col_mask[:, None] & (ok[None, :] < K))
    tl.store(dv_ptr + ((i_b * T + cols[:, None]) * H + i_h) * V + ov[None, :], dv.to(dv_ptr.dtype.element_ty),
             mask=col_mask[:, None] & (ov[None, :] < V))


@triton.jit
def _swa_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, scale, T, W,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = i_m * BM + tl.arange(0, BM)
    row_mask = rows < T
    ok, ov = tl.arange(0, BK), tl.arange(0, BV)
    q = tl.load(q_ptr + ((i_b * T + rows[:, None]) * H + i_h) * K + ok[None, :],
                mask=row_mask[:, None] & (ok[None, :] < K), other=0.0).to(tl.float32)
    do = tl.load(do_ptr + ((i_b * T + rows[:, None]) * H + i_h) * V + ov[None, :],
                 mask=row_mask[:, None] & (ov[None, :] < V), other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + (i_b * T + rows) * H + i_h, mask=row_mask, other=0.0)
    delta = tl.load(delta_ptr + (i_b * T + rows) * H + i_h, mask=row_mask, other=0.0)
    dq = tl.zeros([BM, BK], dtype=tl.float32)
    start = tl.maximum(i_m * BM - W + 1, 0)
    start = (start // BN) * BN
    stop = tl.minimum((i_m + 1) * BM, T)
    for j0 in range(start, stop, BN):
        cols = j0 + tl.arange(0, BN)
        k = tl.load(k_ptr + ((i_b * T + cols[:, None]) * H + i_h) * K + ok[None, :],
                    mask=(cols[:, None] < T) & (ok[None, :] < K), other=0.0).to(tl.float32)
        v = tl.load(v_ptr + ((i_b * T + cols[:, None]) * H + i_h) * V + ov[None, :],
                    mask=(cols[:, None] < T) & (ov[None, :] < V), other=0.0).to(tl.float32)
        s = _swa_scores(q, k, rows, cols, scale, T, W, PREC)
        p = tl.where(row_mask[:, None], tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        dq += tl.dot(p * (dp - delta[:, None]), k, input_precision=PREC)
    tl.store(dq_ptr + ((i_b * T + rows[:, None]) * H + i_h) * K + ok[None, :], (dq * scale).to(dq_ptr.dtype.element_ty),
             mask=row_mask[:, None] & (ok[None, :] < K))


def _swa_config(dk: int, dv: int, t: int, block: int | None = None) -> dict:
    """Tile sizes: the whole head in one tile, query/key blocks narrower for wide heads or short T."""
    bk, bv = max(16, triton.next_power_of_2(dk)), max(16, triton.next_power_of_2(dv))
    if block is None:
        block = 64 if max(bk, bv) <= 128 else 32
        block = min(block, max(16, triton.next_power_of_2(t)))
    num_warps = 8 if block == 64 and max(bk, bv) > 64 else 4
    num_stages = 1 if max(bk, bv) > 128 else 2  # the loop's prefetched tiles must fit in shared memory
    return dict(BM=block, BN=block, BK=bk, BV=bv, num_warps=num_warps, num_stages=num_stages)


def _swa_precision(*tensors: torch.Tensor) -> str:
    return "ieee" if all(x.dtype == torch.float32 for x in tensors) else "tf32"


class _SlidingWindowFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window, scale, block_size):
        q, k, v = (x.contiguous() for x in (q, k, v))
        b, t, h, dk = q.shape
        dv = v.shape[-1]
        cfg = _swa_config(dk, dv, t, block_size)
        precision = _swa_precision(q, k, v)
        o = torch.empty(b, t, h, dv, device=v.device, dtype=v.dtype)
        lse = torch.empty(b, t, h, device=q.device, dtype=torch.float32)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.window, ctx.scale, ctx.block_size = window, scale, block_size
        if o.numel() == 0:
            return o
        _swa_forward_kernel[(triton.cdiv(t, cfg["BM"]), b * h)](
            q, k, v, o, lse, scale, t, window, H=h, K=dk, V=dv, PREC=precision, **cfg,
        )
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        window, scale = ctx.window, ctx.scale
        b, t, h, dk = q.shape
        dv_dim = v.shape[-1]
        cfg = _swa_config(dk, dv_dim, t, ctx.block_size)
        precision = _swa_precision(q, k, v)
        do = do.contiguous()
        delta = (o.float() * do.float()).sum(-1)  # [B, T, H]
        dq, dk_, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        if do.numel() == 0:
            return dq, dk_, dv, None, None, None
        common = dict(H=h, K=dk, V=dv_dim, PREC=precision, **cfg)
        _swa_dkdv_kernel[(triton.cdiv(t, cfg["BN"]), b * h)](
            q, k, v, do, lse, delta, dk_, dv, scale, t, window, **common,
        )
        _swa_dq_kernel[(triton.cdiv(t, cfg["BM"]), b * h)](
            q, k, v, do, lse, delta, dq, scale, t, window, **common,
        )
        return dq, dk_, dv, None, None, None


def sliding_window_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    scale: float | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Causal softmax attention of each token over itself and the previous ``window - 1`` tokens.

    ``q, k [B, T, H, K]``, ``v [B, T, H, V]`` (``K, V <= 256``); returns ``[B, T, H, V]`` in
    ``v``'s dtype; differentiable in ``q``, ``k`` and ``v``. ``scale`` defaults to ``K ** -0.5``.
    The tensors must be on a device Triton runs on (CUDA, or the CPU under
    ``TRITON_INTERPRET=1`` set before this module is imported). ``block_size`` (a power of
    two >= 16) overrides the query/key tile length, a tuning knob; the result is the same.
    """
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"sliding_window_attention_triton wants q, k [B, T, H, K] and v [B, T, H, V]; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if max(q.shape[-1], v.shape[-1]) > _SWA_MAX_HEAD_DIM:
        raise ValueError(f"sliding_window_attention_triton supports head sizes up to {_SWA_MAX_HEAD_DIM}, "
                         f"got K={q.shape[-1]}, V={v.shape[-1]}")
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    window = min(window, max(q.shape[1], 1))  # a wider window sees the same tokens (and keeps T - W in int32)
    if block_size is not None and (block_size < 16 or block_size & (block_size - 1)):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _SlidingWindowFunction.apply(q, k, v, window, scale, block_size)
