"""Delta rules with channel-wise gates: Gated DeltaNet-2 (GDN2) and Kimi Delta Attention (KDA).

Recurrence per head (state ``S`` is ``[K, V]``; ``g_t`` in R^K is a log decay per key channel,
``b_t`` in R^K an erase gate on the key axis, ``w_t`` in R^V a write gate on the value axis):

    S_t = (I - k_t (b_t * k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t * v_t)^T,    o_t = S_t^T (scale q_t)

KDA (Kimi Linear, 2025) is the special case ``b_t = w_t = beta_t`` (a scalar per head and token);
with a scalar decay as well it is the gated delta rule of ``delta_rule.py``.

Chunkwise form. Write ``S_t = D_t S_{t-1} + k_t u_t^T``, where ``D_t = Diag(exp g_t)`` and the
correction ``u_t = w_t * v_t - (b_t * k_t)^T D_t S_{t-1}``. Inside a chunk with start state
``S_0`` and cumulative log decays ``G_t = g_1 + ... + g_t`` (per channel, non-increasing):

    D_t S_{t-1} = Diag(exp G_t) S_0 + sum_{j<t} (exp(G_t - G_j) * k_j) u_j^T

so the corrections solve the unit lower-triangular system (the WY representation)

    (I + A) U = W*V - (B*K*exp G) S_0,    A[t, j] = sum_d b_td k_td k_jd exp(G_td - G_jd)  (j < t)

i.e. ``U = U_0 - W_0 S_0`` with ``U_0 = (I+A)^{-1} (W*V)`` and ``W_0 = (I+A)^{-1} (B*K*exp G)``,
both computed for all chunks at once. Outputs and the next chunk's state are

    o_t = (q_t * exp G_t)^T S_0 + sum_{j<=t} P[t, j] u_j,   P[t, j] = sum_d q_td k_jd exp(G_td - G_jd)
    S_C = Diag(exp G_C) S_0 + sum_j (exp(G_C - G_j) * k_j) u_j^T

and only that state recursion visits the chunks in order. Cost is O(T C K + T K V): linear in T.

Numerical safety. The usual factorisation ``exp(G_t - G_j) = exp(G_t) exp(-G_j)`` overflows
fp32 once ``-G_j`` passes ~88 (a chunk of 64 steps at log decay -1.4 per step). Here nothing
positive is ever exponentiated: a binary tree over the chunk puts each pair (t, j) in the
smallest block holding both, j in its first half and t in its second, and factors its decay
through the point between the halves, ``exp(g_{mid+1} + ... + g_t) * exp(g_{j+1} + ... + g_mid)``,
both <= 1. The decays within halves are products of the steps' own factors ``exp(g_i)``, never a
quotient nor a difference of cumulative sums (which cancels catastrophically when a weak decay
follows strong ones), so any finite decay, however strong, is accurate to a few ulp or underflows
to zero. Per tree level that is one copy of the rows and of the keys, scaled within their halves,
and one batched matmul: O(C K log C) elementwise work per chunk. (A chunk size with an odd factor
``s`` takes the pairs inside its leaves of ``s`` steps elementwise, from segment sums.)
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from asiarch.arch.ops.backend import pad_to_chunks, use_fla
from asiarch.arch.ops.delta_rule import _to_chunks


def _sums(x: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """``out[..., a, :] = sum_i select[a, i] x[..., i, :]`` for a 0/1 ``select [A, L]`` and ``x [..., L, K]``.

    A matmul: each entry adds only its own terms (no difference of running sums, which would
    cancel catastrophically for a small decay following strong ones), and unlike cumsum/flip
    along a middle dimension it is fast on CPU, backward included.
    """
    return (x.transpose(-1, -2) @ select.to(x.dtype).T).transpose(-1, -2)


def _selectors(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """0/1 matrices over positions ``0..n-1``: prefix (i <= t), suffix (i > j), pair segments (j < i <= t)."""
    pos = torch.arange(n, device=device)
    t, j, i = pos[:, None, None], pos[None, :, None], pos[None, None, :]
    return {
        "prefix": (pos[None, :] <= pos[:, None]).float(),
        "suffix": (pos[None, :] > pos[:, None]).float(),
        "segment": ((j < i) & (i <= t)).float().flatten(0, 1),  # [n*n, n]
        "causal": pos[None, :] <= pos[:, None],
    }


def _segment_sums(x: torch.Tensor) -> torch.Tensor:
    """``out[t, j] = x[j+1] + ... + x[t]`` for ``j <= t`` (0 on the diagonal) and -inf above it.

    ``x`` is ``[..., L, K]``, the result ``[..., L, L, K]``.
    """
    n = x.shape[-2]
    sel = _selectors(n, x.device)
    sums = _sums(x, sel["segment"]).unflatten(-2, (n, n))
    return sums.masked_fill(~sel["causal"][..., None], float("-inf"))


def _levels(c: int, bottom: int) -> list[int]:
    """Half sizes of the tree's levels: ``bottom, 2 bottom, ..., c/2`` (``c = bottom * 2^L``)."""
    halves, h = [], bottom
    while h < c:
        halves.append(h)
        h *= 2
    return halves


def _pair_blocks(m: torch.Tensor, nb: int, h: int) -> torch.Tensor:
    """``m [Bt, C, C]`` (``C = 2 h nb``) viewed as ``[Bt, 2, h, 2, h, nb]``: ``[:, a, :, b]`` is the block (a, b)
    of every block of ``2h`` on the diagonal."""
    return m.view(m.shape[0], nb, 2, h, nb, 2, h).diagonal(dim1=1, dim2=4)


def _small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a [..., M, J]``, ``J`` tiny: a sum of ``J`` outer products (BLAS is slow there)."""
    out = a[..., :, :1] * b[..., :1, :]
    for i in range(1, a.shape[-1]):
        out.addcmul_(a[..., :, i : i + 1], b[..., i : i + 1, :])
    return out


class _DecayedScores(torch.autograd.Function):
    """Decayed score matrices over a chunk and the chunk's decays, with a hand-written backward.

    Inputs: ``g, k [Bt, C, K]`` (``g`` the per-step log decays), the leaf size ``s`` (``C = s 2^L``),
    then ``R`` row operands ``[Bt, C, K]`` and their leaf blocks ``[Bt, C/s, s, s]`` (``None``: zero).
    Returns ``R`` matrices ``M[t, j] = sum_d rows[t, d] k[j, d] exp(g[j+1, d] + ... + g[t, d])`` for
    ``t, j`` in different leaves (the leaf blocks on the block diagonal, 0 above), then the decays
    from the chunk start to ``t`` (inclusive) and from ``j`` (exclusive) to the chunk end.

    A binary tree over the chunk: a pair (t, j) belongs to the smallest block of ``2h`` holding
    both, j in its first half and t in its second, and factors through the point between them,
    ``exp(g[mid+1..t]) * exp(g[j+1..mid])``: per level one copy of the rows and of the keys, each
    scaled by its decay within its half, and one batched matmul. The decays within halves are built
    bottom-up, multiplying in whole-half decays: every factor is ``exp`` of a sum of log decays
    <= 0 (one ``exp`` per step when ``s = 1``), so nothing overflows and nothing is a quotient or a
    difference; ``L`` products are accurate to a few ulp, and a vanishing decay underflows to zero
    as the exact value would. The backward runs the levels top-down, with the log-decay gradients
    (the map from ``g`` to the log decays is a 0/1 matrix) accumulated in place.
    """

    @staticmethod
    def forward(ctx, g, k, bottom, *operands):
        r = len(operands) // 2
        g, k = g.contiguous(), k.contiguous()
        rows, leaves = [x.contiguous() for x in operands[:r]], operands[r:]
        bt, c, dk = k.shape
        n = c // bottom
        if bottom == 1:
            prefix = g.exp()  # decays within the current blocks: into t, out of j, whole block
            total = prefix.clone()
            suffix = torch.ones_like(g)
        else:
            sel = _selectors(bottom, g.device)
            g_blk = g.view(bt, n, bottom, dk)
            prefix = _sums(g_blk, sel["prefix"]).exp().reshape(bt, c, dk)
            suffix = _sums(g_blk, sel["suffix"]).exp().reshape(bt, c, dk)
            total = g_blk.sum(-2).exp()  # [Bt, n, K]
        outs = [k.new_empty(bt, c, c) for _ in rows]
        for m, leaf in zip(outs, leaves):
            diag = m.view(bt, n, bottom, n, bottom).diagonal(dim1=1, dim2=3)  # [Bt, s, s, n]
            diag.zero_() if leaf is None else diag.copy_(leaf.permute(0, 2, 3, 1))
        saved = []
        for h in _levels(c, bottom):
            nb = c // (2 * h)
            p4, s4, t2 = prefix.view(bt, nb, 2, h, dk), suffix.view(bt, nb, 2, h, dk), total.view(bt, nb, 2, dk)
            e_in, e_out = p4[:, :, 1].clone(), s4[:, :, 0].clone()  # [Bt, nb, h, K]
            r_f = k.new_empty(bt, nb, r, h, dk)  # all row operands: one matmul
            for j, x in enumerate(rows):
                torch.mul(x.view(bt, nb, 2, h, dk)[:, :, 1], e_in, out=r_f[:, :, j])
            k_f = k.view(bt, nb, 2, h, dk)[:, :, 0] * e_out
            cross = (r_f.view(bt, nb, r * h, dk) @ k_f.transpose(-1, -2)).view(bt, nb, r, h, h)
            for j, m in enumerate(outs):
                blocks = _pair_blocks(m, nb, h)
                blocks[:, 1, :, 0].copy_(cross[:, :, j].permute(0, 2, 3, 1))
                blocks[:, 0, :, 1].zero_()
            p4[:, :, 1] *= t2[:, :, 0, None]  # one level up: the halves merge
            s4[:, :, 0] *= t2[:, :, 1, None]
            total = t2[:, :, 0] * t2[:, :, 1]
            saved += [e_in, e_out, r_f, k_f]
        ctx.bottom, ctx.r, ctx.has_leaf = bottom, r, [leaf is not None for leaf in leaves]
        ctx.save_for_backward(k, prefix, suffix, *rows, *saved)
        return (*outs, prefix, suffix)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        k, prefix, suffix, *rest = ctx.saved_tensors
        bottom, r = ctx.bottom, ctx.r
        rows, saved = rest[:r], rest[r:]
        bt, c, dk = k.shape
        n = c // bottom
        d_mats = [k.new_zeros(bt, c, c) if x is None else x.contiguous() for x in grads[:r]]
        d_prefix, d_suffix = grads[r:]
        d_rows = [torch.zeros_like(x) for x in rows]
        d_k = torch.zeros_like(k)
        d_leaves = [
            m.view(bt, n, bottom, n, bottom).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).contiguous() if has else None
            for m, has in zip(d_mats, ctx.has_leaf)
        ]
        # Gradients of the log decays within halves (d exp(x) / dx = exp(x)), and of the blocks' totals.
        d_p = torch.zeros_like(prefix) if d_prefix is None else d_prefix * prefix
        d_s = torch.zeros_like(suffix) if d_suffix is None else d_suffix * suffix
        d_total = k.new_zeros(bt, 1, dk)
        for i, h in reversed(list(enumerate(_levels(c, bottom)))):
            nb = c // (2 * h)
            e_in, e_out, r_f, k_f = saved[4 * i : 4 * i + 4]
            p4, s4 = d_p.view(bt, nb, 2, h, dk), d_s.view(bt, nb, 2, h, dk)
            # Going down a level: each half's total went into the other half's decays.
            d_first = d_total + (p4[:, :, 1, 0] if h == 1 else p4[:, :, 1].sum(-2))
            d_second = d_total + (s4[:, :, 0, 0] if h == 1 else s4[:, :, 0].sum(-2))
            d_total = torch.stack([d_first, d_second], dim=2).view(bt, 2 * nb, dk)

            d_cross = k.new_empty(bt, nb, r, h, h)
            for j, m in enumerate(d_mats):
                d_cross[:, :, j].copy_(_pair_blocks(m, nb, h)[:, 1, :, 0].permute(0, 3, 1, 2))
            d_cross = d_cross.view(bt, nb, r * h, h)
            r_flat = r_f.view(bt, nb, r * h, dk)
            if h <= 2:  # contractions over 1 or 2: outer products beat BLAS
                d_rf = _small_matmul(d_cross, k_f).view(bt, nb, r, h, dk)
                d_kf = _small_matmul(d_cross.transpose(-1, -2), r_flat)
            else:
                d_rf = (d_cross @ k_f).view(bt, nb, r, h, dk)
                d_kf = d_cross.transpose(-1, -2) @ r_flat  # sums over the row operands
            for j, dx in enumerate(d_rows):
                dx.view(bt, nb, 2, h, dk)[:, :, 1].addcmul_(d_rf[:, :, j], e_in)
                p4[:, :, 1].addcmul_(d_rf[:, :, j], r_f[:, :, j])  # d/d(log e_in): times rows * e_in
            d_k.view(bt, nb, 2, h, dk)[:, :, 0].addcmul_(d_kf, e_out)
            s4[:, :, 0].addcmul_(d_kf, k_f)
        if bottom == 1:
            d_g = d_p.add_(d_total)  # prefix and total start as g, the suffix as 0
        else:
            sel = _selectors(bottom, k.device)
            d_g = _sums(d_p.view(bt, n, bottom, dk), sel["prefix"].T) + d_total[:, :, None]
            d_g = (d_g + _sums(d_s.view(bt, n, bottom, dk), sel["suffix"].T)).reshape(bt, c, dk)
        return (d_g, d_k, None, *d_rows, *d_leaves)


def _unit_lower_inverse(a: torch.Tensor) -> torch.Tensor:
    """``(I + A)^-1`` for the strictly lower part ``A`` of ``a [Bt, C, C]``, by blocks along the tree.

    With ``T1, T2`` the inverses of a ``2h`` block's diagonal halves and ``X`` its lower-left
    block, the block's inverse is ``[[T1, 0], [-T2 X T1, T2]]``: a few batched matmuls per level
    instead of a triangular solve (slow on CPU for many small matrices).
    """
    bt, c, _ = a.shape
    bottom = c // (c & -c)
    n = c // bottom
    inv = torch.empty_like(a)
    leaves = inv.view(bt, n, bottom, n, bottom).diagonal(dim1=1, dim2=3)  # [Bt, s, s, n]
    if bottom == 1:
        leaves.fill_(1.0)
    else:
        blocks = a.view(bt, n, bottom, n, bottom).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
        eye = torch.eye(bottom, dtype=a.dtype, device=a.device).expand_as(blocks)
        leaves.copy_(torch.linalg.solve_triangular(blocks, eye, upper=False, unitriangular=True).permute(0, 2, 3, 1))
    for h in _levels(c, bottom):
        nb = c // (2 * h)
        lower = _pair_blocks(a, nb, h)[:, 1, :, 0].permute(0, 3, 1, 2)  # [Bt, nb, h, h]
        blocks = _pair_blocks(inv, nb, h)
        if h == 1:
            cross = -lower
        else:
            cross = (blocks[:, 1, :, 1].permute(0, 3, 1, 2) @ lower) @ blocks[:, 0, :, 0].permute(0, 3, 1, 2)
            cross.neg_()
        blocks[:, 1, :, 0].copy_(cross.permute(0, 2, 3, 1))
        blocks[:, 0, :, 1].zero_()
    return inv


class _UnitLowerSolve(torch.autograd.Function):
    """``X = (I + A)^-1 B`` for the strictly lower part ``A`` of ``a [Bt, C, C]`` (diagonal and above unread).

    The inverse is formed once and reused: backward is two matmuls, ``dB = T^T dX`` and
    ``dA = -tril(dB X^T, -1)``, instead of a second (transposed) triangular solve.
    """

    @staticmethod
    def forward(ctx, a, b):
        inv = _unit_lower_inverse(a.contiguous())
        x = inv @ b
        ctx.save_for_backward(inv, x)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, dx):
        inv, x = ctx.saved_tensors
        db = inv.transpose(-1, -2) @ dx
        da = (db @ x.transpose(-1, -2)).tril_(-1).neg_()
        return da, db


def gdn2_chunk_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pure-PyTorch chunkwise GDN2 on ``[B, T, H, D]`` inputs, computed in fp32.

    ``b`` may be ``[B, T, H, K]`` or ``[B, T, H, 1]`` and ``w`` ``[B, T, H, V]`` or ``[B, T, H, 1]``
    (broadcast: the KDA case never expands its scalar beta).
    """
    bsz, t, h, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size
    out_dtype = v.dtype
    scale = dk**-0.5 if scale is None else scale
    q, k, v, g, b, w = (x.float() for x in (q, k, v, g, b, w))
    q = q * scale
    # [B, H, N, C, D] -> [B*H*N, C, D]
    q, k, v, g, b, w = (_to_chunks(pad_to_chunks(x, c), c).flatten(0, 2) for x in (q, k, v, g, b, w))
    n_chunks = q.shape[0] // (bsz * h)

    bottom = c // (c & -c)  # the odd part of the chunk: leaves of the tree
    k_erase = b * k
    if bottom == 1:
        leaves = [(q * k).sum(-1)[:, :, None, None], None]  # the diagonal; kk's is never read
    else:
        n = c // bottom
        k_pairs = k.unflatten(-2, (n, bottom))[..., None, :, :] * _segment_sums(g.unflatten(-2, (n, bottom))).exp()
        leaves = [(x.unflatten(-2, (n, bottom))[..., :, None, :] * k_pairs).sum(-1) for x in (q, k_erase)]
    qk, kk, decay_in, decay_out = _DecayedScores.apply(g, k, bottom, q, k_erase, *leaves)

    # One solve for both right-hand sides; kk's diagonal and upper part are never read.
    rhs = torch.cat([w * v, k_erase * decay_in], dim=-1)
    u, w_state = _UnitLowerSolve.apply(kk, rhs).split([dv, dk], dim=-1)

    q_in = q * decay_in  # reads the chunk-start state decayed to t
    k_out_t = (k * decay_out).transpose(-1, -2)  # writes decayed to the chunk end, [.., K, C]
    chunk_decay = decay_in[..., -1:, :].transpose(-1, -2)  # [Bt, K, 1]

    # Sequential over chunks only; unbind so backward is linear in T (see delta_rule.py).
    state = q.new_zeros(bsz * h, dk, dv) if initial_state is None else initial_state.float().flatten(0, 1)
    chunk_states, corrections = [], []
    per_chunk = (x.unflatten(0, (bsz * h, n_chunks)).unbind(1) for x in (u, w_state, k_out_t, chunk_decay))
    for u_n, w_n, k_n, decay_n in zip(*per_chunk):
        u_n = u_n - w_n @ state
        chunk_states.append(state)
        corrections.append(u_n)
        state = state * decay_n + k_n @ u_n
    u = torch.stack(corrections, dim=1).flatten(0, 1)
    o = q_in @ torch.stack(chunk_states, dim=1).flatten(0, 1) + qk @ u  # [B*H*N, C, V]
    o = o.view(bsz, h, n_chunks * c, dv).transpose(1, 2)[:, :t]
    state = state.view(bsz, h, dk, dv)
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_gdn2(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    b: torch.Tensor,
    w: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GDN2 over ``q, k, g, b [B,T,H,K]``, ``v, w [B,T,H,V]``; returns ``(o, final_state [B,H,K,V])``.

    ``g`` is the per-channel log decay (<= 0). ``chunk_size`` applies to the PyTorch path; fla's
    kernel uses its own (64). Argument order follows ``fla.ops.gdn2.chunk_gdn2``.
    """
    if use_fla(q, backend):
        from fla.ops.gdn2 import chunk_gdn2 as fla_chunk_gdn2

        h0 = None if initial_state is None else initial_state.float()  # fla wants an fp32 state
        return fla_chunk_gdn2(q, k, v, g, b, w, scale=scale, initial_state=h0, output_final_state=output_final_state)
    return gdn2_chunk_torch(q, k, v, g, b, w, scale, initial_state, output_final_state, chunk_size)


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kimi Delta Attention: GDN2 with ``b = w = beta``, ``beta [B,T,H]``; ``g [B,T,H,K]`` log decays.

    ``chunk_size`` applies to the PyTorch path; fla's kernel uses its own (64). Argument order
    follows ``fla.ops.kda.chunk_kda``.
    """
    if use_fla(q, backend):
        from fla.ops.kda import chunk_kda as fla_chunk_kda

        h0 = None if initial_state is None else initial_state.float()
        return fla_chunk_kda(q, k, v, g, beta, scale=scale, initial_state=h0, output_final_state=output_final_state)
    gate = beta[..., None]  # [B, T, H, 1]: broadcast over K (erase) and V (write)
    return gdn2_chunk_torch(q, k, v, g, gate, gate, scale, initial_state, output_final_state, chunk_size)
