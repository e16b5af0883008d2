"""Chunked SSD (a linear recurrence with a per-head scalar decay) in Triton: forward and backward.

The operator (flash-linear-attention's "simple GLA", Mamba2's SSD) per batch and head:

    S_t = exp(g_t) S_{t-1} + k_t v_t^T,    o_t = S_t^T (scale q_t),    S_0 = initial_state (or 0)

with ``q, k [B, T, H, K]``, ``v [B, T, H, V]``, log-decays ``g [B, T, H]`` (``g <= 0``) and a
state ``S [K, V]``. The reference is ``asiarch.arch.ops.ssd.ssd_chunk_torch``.

Chunkwise form
--------------
Cut time into chunks of ``C`` steps. Inside chunk ``n`` (positions ``t = nC .. nC + C - 1``)
let ``G_t`` be the cumulative sum of ``g`` from the chunk's start up to and including ``t``
and ``G_L`` its value at the chunk's last step; write ``h_n`` for the state before the
chunk and ``q~ = scale q``. Unrolling the recurrence inside the chunk gives

    o_t     = exp(G_t) q~_t^T h_n  +  sum_{j <= t} exp(G_t - G_j) (q~_t . k_j) v_j       (1)
    h_{n+1} = exp(G_L) h_n         +  sum_j exp(G_L - G_j) k_j v_j^T                     (2)

(1) is a masked, decayed attention inside the chunk plus a read of the carried state; (2)
carries the state to the next chunk. Only (2) is sequential over chunks. Every exponent is
a non-positive number when ``g <= 0``: ``G_t <= 0``, and ``G_t - G_j`` for ``j <= t``. The
masked entries (``j > t``) are set to 0 *before* exponentiating, so no ``exp`` of a
positive difference is ever formed and nothing overflows, however strong the decay.

Backward
--------
Let ``D_n = dL/dh_{n+1}`` (the gradient reaching the state after chunk ``n``; for the last
chunk the final state's gradient, or 0). Going backwards through the chunks,

    D_{n-1} = exp(G_L) D_n + sum_t exp(G_t) q~_t do_t^T,      dL/d initial_state = D_{-1}

and inside chunk ``n``, with ``dA_tj = do_t . v_j`` and ``A_tj = q~_t . k_j`` (``j <= t``):

    dq~_t = sum_{j <= t} exp(G_t - G_j) dA_tj k_j   +  exp(G_t) h_n do_t,       dq = scale dq~
    dk_j  = sum_{t >= j} exp(G_t - G_j) dA_tj q~_t  +  exp(G_L - G_j) D_n v_j
    dv_j  = sum_{t >= j} exp(G_t - G_j) A_tj do_t   +  exp(G_L - G_j) D_n^T k_j

For the decays, every term above that carries ``exp(... G_t ...)`` contributes its own value
to ``dG_t`` with a plus sign, and with a minus sign to ``dG_j``; summing them gives
``dG_t = q_t . dq_t - k_t . dk_t``, except that the state's ``exp(G_L)`` factors add
``<h_{n+1}, D_n>`` (a Frobenius product) at the chunk's last step. Since
``G_t = sum_{s <= t} g_s`` inside the chunk, ``dg_s = sum_{t >= s} dG_t``: a reverse
cumulative sum inside the chunk, so the extra term reaches every step of the chunk.

Kernels: one sequential state pass (which also stores the chunk-start states), one output
pass parallel over chunks; in backward the states are recomputed, the state gradients go
backwards sequentially, then ``dv`` and ``(dq, dk, dg)`` are parallel over chunks. ``K`` and
``V`` are tiled in blocks of at most 64 (any size; blocks are masked); the ``dg`` partial
sums of the ``K`` blocks are added up in PyTorch. Every product accumulates in fp32; the
states are kept in fp32. fp32 inputs use IEEE fp32 products, others TF32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["ssd_triton"]


@triton.jit
def _ssd_chunk_decays(g_ptr, i_b, i_h, i_n, T, H: tl.constexpr, BT: tl.constexpr):
    """The chunk's cumulative log-decays ``G_t`` (0 past the end of the sequence) and ``G_L``."""
    t = i_n * BT + tl.arange(0, BT)
    g = tl.load(g_ptr + (i_b * T + t) * H + i_h, mask=t < T, other=0.0).to(tl.float32)
    g_cum = tl.cumsum(g, axis=0)
    return g_cum, tl.sum(g, axis=0)


@triton.jit
def _ssd_states_kernel(
    k_ptr, v_ptr, g_ptr, h0_ptr, hs_ptr, T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_H0: tl.constexpr, PREC: tl.constexpr,
):
    """Equation (2): stores each chunk's start state ``h_n`` and, in slot ``NT``, the final state."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    ok = i_k * BK + tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    kv_mask = (ok[:, None] < K) & (ov[None, :] < V)
    kv_offset = ok[:, None] * V + ov[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        state += tl.load(h0_ptr + i_bh.to(tl.int64) * K * V + kv_offset, mask=kv_mask, other=0.0).to(tl.float32)
    hs_base = hs_ptr + i_bh.to(tl.int64) * (NT + 1) * K * V
    for i_n in range(NT):
        tl.store(hs_base + i_n * K * V + kv_offset, state, mask=kv_mask)
        t = i_n * BT + tl.arange(0, BT)
        t_mask = t < T
        g_cum, g_last = _ssd_chunk_decays(g_ptr, i_b, i_h, i_n, T, H, BT)
        k = tl.load(k_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :],
                    mask=t_mask[:, None] & (ok[None, :] < K), other=0.0).to(tl.float32)
        v = tl.load(v_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :],
                    mask=t_mask[:, None] & (ov[None, :] < V), other=0.0).to(tl.float32)
        k = k * tl.exp(g_last - g_cum)[:, None]  # G_L - G_t <= 0
        state = state * tl.exp(g_last) + tl.dot(tl.trans(k), v, input_precision=PREC)
    tl.store(hs_base + NT * K * V + kv_offset, state, mask=kv_mask)


@triton.jit
def _ssd_output_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, hs_ptr, o_ptr, scale, T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    """Equation (1) for one chunk and one block of value columns."""
    i_v, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    t = i_n * BT + tl.arange(0, BT)
    t_mask = t < T
    ov = i_v * BV + tl.arange(0, BV)
    g_cum, _ = _ssd_chunk_decays(g_ptr, i_b, i_h, i_n, T, H, BT)
    h_base = hs_ptr + (i_bh.to(tl.int64) * (NT + 1) + i_n) * K * V

    scores = tl.zeros([BT, BT], dtype=tl.float32)
    inter = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        ok = i_k * BK + tl.arange(0, BK)
        qk_mask = t_mask[:, None] & (ok[None, :] < K)
        q = tl.load(q_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], mask=qk_mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], mask=qk_mask, other=0.0).to(tl.float32)
        h = tl.load(h_base + ok[:, None] * V + ov[None, :], mask=(ok[:, None] < K) & (ov[None, :] < V), other=0.0)
        scores += tl.dot(q, tl.trans(k), input_precision=PREC)
        inter += tl.dot(q, h, input_precision=PREC)

    causal = tl.arange(0, BT)[:, None] >= tl.arange(0, BT)[None, :]
    decay = tl.exp(tl.where(causal, g_cum[:, None] - g_cum[None, :], 0.0))  # masked to 0 before exp
    scores = tl.where(causal, scores * decay, 0.0)
    tv_mask = t_mask[:, None] & (ov[None, :] < V)
    v = tl.load(v_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :], mask=tv_mask, other=0.0).to(tl.float32)
    o = (tl.dot(scores, v, input_precision=PREC) + inter * tl.exp(g_cum)[:, None]) * scale
    tl.store(o_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :], o.to(o_ptr.dtype.element_ty), mask=tv_mask)


@triton.jit
def _ssd_state_grads_kernel(
    q_ptr, g_ptr, do_ptr, dht_ptr, dhs_ptr, dh0_ptr, scale, T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PREC: tl.constexpr,
):
    """``D_n`` for every chunk, backwards from the final state's gradient; ``D_{-1}`` is dh0."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    ok = i_k * BK + tl.arange(0, BK)
    ov = i_v * BV + tl.arange(0, BV)
    kv_mask = (ok[:, None] < K) & (ov[None, :] < V)
    kv_offset = ok[:, None] * V + ov[None, :]
    grad = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        grad += tl.load(dht_ptr + i_bh.to(tl.int64) * K * V + kv_offset, mask=kv_mask, other=0.0).to(tl.float32)
    dhs_base = dhs_ptr + i_bh.to(tl.int64) * NT * K * V
    for i_r in range(NT):
        i_n = NT - 1 - i_r
        tl.store(dhs_base + i_n * K * V + kv_offset, grad, mask=kv_mask)
        t = i_n * BT + tl.arange(0, BT)
        t_mask = t < T
        g_cum, g_last = _ssd_chunk_decays(g_ptr, i_b, i_h, i_n, T, H, BT)
        q = tl.load(q_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :],
                    mask=t_mask[:, None] & (ok[None, :] < K), other=0.0).to(tl.float32)
        do = tl.load(do_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :],
                     mask=t_mask[:, None] & (ov[None, :] < V), other=0.0).to(tl.float32)
        q = q * (tl.exp(g_cum) * scale)[:, None]
        grad = grad * tl.exp(g_last) + tl.dot(tl.trans(q), do, input_precision=PREC)
    if STORE_DH0:
        tl.store(dh0_ptr + i_bh.to(tl.int64) * K * V + kv_offset, grad, mask=kv_mask)


@triton.jit
def _ssd_dv_kernel(
    q_ptr, k_ptr, g_ptr, do_ptr, dhs_ptr, dv_ptr, scale, T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    """``dv`` for one chunk and one block of value columns."""
    i_v, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    t = i_n * BT + tl.arange(0, BT)
    t_mask = t < T
    ov = i_v * BV + tl.arange(0, BV)
    g_cum, g_last = _ssd_chunk_decays(g_ptr, i_b, i_h, i_n, T, H, BT)
    d_base = dhs_ptr + (i_bh.to(tl.int64) * NT + i_n) * K * V

    scores_t = tl.zeros([BT, BT], dtype=tl.float32)  # [j, t] = k_j . q_t
    k_grad = tl.zeros([BT, BV], dtype=tl.float32)  # [j, :] = D_n^T k_j
    for i_k in range(tl.cdiv(K, BK)):
        ok = i_k * BK + tl.arange(0, BK)
        qk_mask = t_mask[:, None] & (ok[None, :] < K)
        q = tl.load(q_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], mask=qk_mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], mask=qk_mask, other=0.0).to(tl.float32)
        d = tl.load(d_base + ok[:, None] * V + ov[None, :], mask=(ok[:, None] < K) & (ov[None, :] < V), other=0.0)
        scores_t += tl.dot(k, tl.trans(q), input_precision=PREC)
        k_grad += tl.dot(k, d, input_precision=PREC)

    causal_t = tl.arange(0, BT)[:, None] <= tl.arange(0, BT)[None, :]  # j <= t
    decay_t = tl.exp(tl.where(causal_t, g_cum[None, :] - g_cum[:, None], 0.0))
    scores_t = tl.where(causal_t, scores_t * decay_t * scale, 0.0)
    tv_mask = t_mask[:, None] & (ov[None, :] < V)
    do = tl.load(do_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :], mask=tv_mask, other=0.0).to(tl.float32)
    dv = tl.dot(scores_t, do, input_precision=PREC) + k_grad * tl.exp(g_last - g_cum)[:, None]
    tl.store(dv_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :], dv.to(dv_ptr.dtype.element_ty), mask=tv_mask)


@triton.jit
def _ssd_dqkg_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, hs_ptr, do_ptr, dhs_ptr, dq_ptr, dk_ptr, dg_ptr, scale, T, NT, B,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    """``dq``, ``dk`` for one chunk and one block of key columns, and that block's share of ``dg``."""
    i_k, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    t = i_n * BT + tl.arange(0, BT)
    t_mask = t < T
    ok = i_k * BK + tl.arange(0, BK)
    g_cum, g_last = _ssd_chunk_decays(g_ptr, i_b, i_h, i_n, T, H, BT)
    h_base = hs_ptr + (i_bh.to(tl.int64) * (NT + 1) + i_n) * K * V  # h_n; h_{n+1} is K * V further
    d_base = dhs_ptr + (i_bh.to(tl.int64) * NT + i_n) * K * V

    d_scores = tl.zeros([BT, BT], dtype=tl.float32)  # [t, j] = do_t . v_j
    q_inter = tl.zeros([BT, BK], dtype=tl.float32)  # [t, :] = h_n do_t
    k_inter = tl.zeros([BT, BK], dtype=tl.float32)  # [j, :] = D_n v_j
    state_term = tl.zeros([BK], dtype=tl.float32)  # <h_{n+1}, D_n>, per key row
    for i_v in range(tl.cdiv(V, BV)):
        ov = i_v * BV + tl.arange(0, BV)
        tv_mask = t_mask[:, None] & (ov[None, :] < V)
        kv_offset = ok[:, None] * V + ov[None, :]
        kv_mask = (ok[:, None] < K) & (ov[None, :] < V)
        v = tl.load(v_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :], mask=tv_mask, other=0.0).to(tl.float32)
        do = tl.load(do_ptr + ((i_b * T + t[:, None]) * H + i_h) * V + ov[None, :], mask=tv_mask, other=0.0).to(tl.float32)
        h = tl.load(h_base + kv_offset, mask=kv_mask, other=0.0)
        h_next = tl.load(h_base + K * V + kv_offset, mask=kv_mask, other=0.0)
        d = tl.load(d_base + kv_offset, mask=kv_mask, other=0.0)
        d_scores += tl.dot(do, tl.trans(v), input_precision=PREC)
        q_inter += tl.dot(do, tl.trans(h), input_precision=PREC)
        k_inter += tl.dot(v, tl.trans(d), input_precision=PREC)
        state_term += tl.sum(h_next * d, axis=1)

    causal = tl.arange(0, BT)[:, None] >= tl.arange(0, BT)[None, :]
    decay = tl.exp(tl.where(causal, g_cum[:, None] - g_cum[None, :], 0.0))
    d_scores = tl.where(causal, d_scores * decay, 0.0)
    qk_mask = t_mask[:, None] & (ok[None, :] < K)
    q = tl.load(q_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], mask=qk_mask, other=0.0).to(tl.float32)
    k = tl.load(k_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], mask=qk_mask, other=0.0).to(tl.float32)
    dq = (tl.dot(d_scores, k, input_precision=PREC) + q_inter * tl.exp(g_cum)[:, None]) * scale
    dk = tl.dot(tl.trans(d_scores), q, input_precision=PREC) * scale + k_inter * tl.exp(g_last - g_cum)[:, None]
    tl.store(dq_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], dq.to(dq_ptr.dtype.element_ty), mask=qk_mask)
    tl.store(dk_ptr + ((i_b * T + t[:, None]) * H + i_h) * K + ok[None, :], dk.to(dk_ptr.dtype.element_ty), mask=qk_mask)

    dg_cum = tl.sum(q * dq - k * dk, axis=1)  # dG_t (this key block's share); 0 past the end
    dg = tl.sum(dg_cum, axis=0) - tl.cumsum(dg_cum, axis=0) + dg_cum + tl.sum(state_term, axis=0)
    tl.store(dg_ptr + ((i_k * B + i_b) * T + t) * H + i_h, dg, mask=t_mask)


def _ssd_block(n: int) -> int:
    """A tile width for a head dimension: a power of two in [16, 64] (the tiles are masked)."""
    return min(64, max(16, triton.next_power_of_2(n)))


def _ssd_precision(*tensors: torch.Tensor) -> str:
    return "ieee" if all(x.dtype == torch.float32 for x in tensors) else "tf32"


def _ssd_check(q, k, v, g, initial_state, chunk_size) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3] or g.shape != q.shape[:3]:
        raise ValueError(f"ssd_triton wants q, k [B, T, H, K], v [B, T, H, V], g [B, T, H]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"ssd_triton needs chunk_size a power of two >= 16 (a Triton tile), got {chunk_size}")
    b, _, h, dk = q.shape
    if initial_state is not None and initial_state.shape != (b, h, dk, v.shape[-1]):
        raise ValueError(f"initial_state must be [B, H, K, V] = {(b, h, dk, v.shape[-1])}, got {tuple(initial_state.shape)}")


def _ssd_states(k, v, g, initial_state, chunk_size, precision):
    """Chunk-start states ``[B, H, NT + 1, K, V]`` (fp32); slot NT is the final state."""
    b, t, h, dk = k.shape
    dv = v.shape[-1]
    nt = triton.cdiv(t, chunk_size)
    bk, bv = _ssd_block(dk), _ssd_block(dv)
    hs = torch.empty(b, h, nt + 1, dk, dv, device=k.device, dtype=torch.float32)
    h0 = initial_state.contiguous() if initial_state is not None else hs  # hs: an unused stand-in pointer
    _ssd_states_kernel[(triton.cdiv(dk, bk), triton.cdiv(dv, bv), b * h)](
        k, v, g, h0, hs, t, nt, H=h, K=dk, V=dv, BT=chunk_size, BK=bk, BV=bv,
        HAS_H0=initial_state is not None, PREC=precision,
    )
    return hs


class _SSDFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, scale, initial_state, output_final_state, chunk_size):
        q, k, v, g = (x.contiguous() for x in (q, k, v, g))
        b, t, h, dk = q.shape
        dv = v.shape[-1]
        nt = triton.cdiv(t, chunk_size)
        precision = _ssd_precision(q, k, v)
        bk, bv = _ssd_block(dk), _ssd_block(dv)
        hs = _ssd_states(k, v, g, initial_state, chunk_size, precision)
        o = torch.empty(b, t, h, dv, device=v.device, dtype=v.dtype)
        _ssd_output_kernel[(triton.cdiv(dv, bv), nt, b * h)](
            q, k, v, g, hs, o, scale, t, nt, H=h, K=dk, V=dv, BT=chunk_size, BK=bk, BV=bv, PREC=precision,
        )
        final_state = hs[:, :, nt].clone() if output_final_state else None
        ctx.save_for_backward(q, k, v, g, initial_state)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        ctx.set_materialize_grads(False)
        return o, final_state

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, initial_state = ctx.saved_tensors
        scale, chunk_size = ctx.scale, ctx.chunk_size
        b, t, h, dk = q.shape
        dv_dim = v.shape[-1]
        nt = triton.cdiv(t, chunk_size)
        precision = _ssd_precision(q, k, v)
        bk, bv = _ssd_block(dk), _ssd_block(dv_dim)
        nk, nv = triton.cdiv(dk, bk), triton.cdiv(dv_dim, bv)
        do = torch.zeros_like(v) if do is None else do.contiguous()
        hs = _ssd_states(k, v, g, initial_state, chunk_size, precision)  # recomputed, not kept from forward

        dhs = torch.empty(b, h, nt, dk, dv_dim, device=q.device, dtype=torch.float32)
        want_dh0 = initial_state is not None and ctx.needs_input_grad[5]
        dh0 = torch.empty(b, h, dk, dv_dim, device=q.device, dtype=torch.float32) if want_dh0 else dhs
        dht_arg = dht.contiguous() if dht is not None else dhs
        _ssd_state_grads_kernel[(nk, nv, b * h)](
            q, g, do, dht_arg, dhs, dh0, scale, t, nt, H=h, K=dk, V=dv_dim, BT=chunk_size, BK=bk, BV=bv,
            HAS_DHT=dht is not None, STORE_DH0=want_dh0, PREC=precision,
        )
        dv = torch.empty_like(v)
        _ssd_dv_kernel[(nv, nt, b * h)](
            q, k, g, do, dhs, dv, scale, t, nt, H=h, K=dk, V=dv_dim, BT=chunk_size, BK=bk, BV=bv, PREC=precision,
        )
        dq, dk_ = torch.empty_like(q), torch.empty_like(k)
        dg_parts = torch.empty(nk, b, t, h, device=q.device, dtype=torch.float32)
        _ssd_dqkg_kernel[(nk, nt, b * h)](
            q, k, v, g, hs, do, dhs, dq, dk_, dg_parts, scale, t, nt, b,
            H=h, K=dk, V=dv_dim, BT=chunk_size, BK=bk, BV=bv, PREC=precision,
        )
        dg = dg_parts.sum(0).to(g.dtype)
        dh0_out = dh0.to(initial_state.dtype) if want_dh0 else None
        return dq, dk_, dv, dg, None, dh0_out, None, None


def ssd_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked SSD on ``[B, T, H, D]`` inputs and log-decays ``g [B, T, H]``; differentiable.

    Same arguments and results as ``asiarch.arch.ops.ssd.ssd_chunk_torch``: the output in
    ``v``'s dtype and, with ``output_final_state``, the final state ``[B, H, K, V]`` in fp32.
    Gradients reach ``q``, ``k``, ``v``, ``g`` and ``initial_state``. ``chunk_size`` is a power
    of two >= 16; any ``T``, ``K`` and ``V``. The tensors must be on a device Triton runs on
    (CUDA, or the CPU under ``TRITON_INTERPRET=1`` set before this module is imported).
    """
    _ssd_check(q, k, v, g, initial_state, chunk_size)
    if q.numel() == 0 or v.numel() == 0:  # nothing to launch; the reference handles the empty shapes
        raise ValueError(f"ssd_triton needs non-empty inputs, got q {tuple(q.shape)}, v {tuple(v.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _SSDFunction.apply(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
