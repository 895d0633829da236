"""L_SC as tiled Triton kernels: the row-wise soft cross-entropy between W_l (thresholded
label-space similarity of weak probabilities, diagonal 1, rows normalised) and softmax(S)
(S_ij = <z_s_i, z_j> / tau, the diagonal <z_s_i, z_s2_i> / tau), with an online log-sum-exp over
column tiles, so neither (B, N) matrix is ever stored.

Per row i: loss_i = LSE_i - sum_j w_ij S_ij / W_i, with W_i = sum_j w_ij (unnormalised w).
Backward: dS_ij = g_i (softmax_ij - w_ij / W_i) / tau; one kernel per row tile gives dz_s and
dz_s2, one per column tile gives dz_cols (recomputing the tiles from the saved LSE_i and W_i), so
no float atomics: deterministic. Layers as in ``ms.py``; inputs fp32 or bf16, fp32 arithmetic
(``tl.dot`` in IEEE fp32, not TF32).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tiles(p_rows, pc, zs, zc, i0, j0, B, N, C, D, offset, rho, inv_tau,
           COSINE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr):
    """(w, S, own, inside) tiles for rows i0.. and columns j0..; w unnormalised and thresholded,
    own = the diagonal (whose S the caller replaces), inside = both indices in range."""
    i = i0 + tl.arange(0, BM)
    j = j0 + tl.arange(0, BN)
    c = tl.arange(0, BC)
    d = tl.arange(0, BD)
    im, jm = i < B, j < N
    pr = tl.load(p_rows + i[:, None] * C + c[None, :], mask=im[:, None] & (c < C)[None, :], other=0.0).to(tl.float32)
    pcol = tl.load(pc + j[:, None] * C + c[None, :], mask=jm[:, None] & (c < C)[None, :], other=0.0).to(tl.float32)
    if COSINE:
        pr = pr / tl.maximum(tl.sqrt(tl.sum(pr * pr, 1)), 1e-12)[:, None]
        pcol = pcol / tl.maximum(tl.sqrt(tl.sum(pcol * pcol, 1)), 1e-12)[:, None]
    w = tl.dot(pr, tl.trans(pcol), input_precision="ieee")
    own = j[None, :] == (i + offset)[:, None]
    inside = im[:, None] & jm[None, :]
    w = tl.where(own, 1.0, w)
    w = tl.where((w >= rho) & inside, w, 0.0)
    a = tl.load(zs + i[:, None] * D + d[None, :], mask=im[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
    b = tl.load(zc + j[:, None] * D + d[None, :], mask=jm[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
    s = tl.dot(a, tl.trans(b), input_precision="ieee") * inv_tau
    return w, s, own, inside


@triton.jit
def _own_logit(zs, zs2, i0, B, D, inv_tau, BM: tl.constexpr, BD: tl.constexpr):
    i = i0 + tl.arange(0, BM)
    d = tl.arange(0, BD)
    m = (i < B)[:, None] & (d < D)[None, :]
    a = tl.load(zs + i[:, None] * D + d[None, :], mask=m, other=0.0).to(tl.float32)
    a2 = tl.load(zs2 + i[:, None] * D + d[None, :], mask=m, other=0.0).to(tl.float32)
    return tl.sum(a * a2, 1) * inv_tau


@triton.jit
def _sc_fwd_kernel(p_rows, pc, zs, zs2, zc, loss, lse_out, wsum_out, B, N, C, D, offset, rho, inv_tau,
                   COSINE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr,
                   BD: tl.constexpr):
    i0 = tl.program_id(0) * BM
    i = i0 + tl.arange(0, BM)
    s_own = _own_logit(zs, zs2, i0, B, D, inv_tau, BM, BD)
    m = tl.full([BM], -1e30, tl.float32)
    l = tl.zeros([BM], tl.float32)
    wsum = tl.zeros([BM], tl.float32)
    ws = tl.zeros([BM], tl.float32)
    for j0 in range(0, N, BN):
        w, s, own, inside = _tiles(p_rows, pc, zs, zc, i0, j0, B, N, C, D, offset, rho, inv_tau,
                                   COSINE, BM, BN, BC, BD)
        s = tl.where(own, s_own[:, None], s)
        s = tl.where(inside, s, -1e30)  # finite: a padded row stays NaN-free
        m_new = tl.maximum(m, tl.max(s, 1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
        m = m_new
        wsum += tl.sum(w, 1)
        ws += tl.sum(tl.where(inside, w * s, 0.0), 1)
    lse = m + tl.log(l)
    im = i < B
    tl.store(loss + i, lse - ws / tl.where(im, wsum, 1.0), mask=im)
    tl.store(lse_out + i, lse, mask=im)
    tl.store(wsum_out + i, wsum, mask=im)


@triton.jit
def _ds(p_rows, pc, zs, zs2, zc, lse, wsum, g, i0, j0, B, N, C, D, offset, rho, inv_tau,
        COSINE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr):
    """dL/dS * (1/tau) for a tile, and the own-mask (the diagonal goes to z_s2, not z_cols)."""
    i = i0 + tl.arange(0, BM)
    im = i < B
    w, s, own, inside = _tiles(p_rows, pc, zs, zc, i0, j0, B, N, C, D, offset, rho, inv_tau,
                               COSINE, BM, BN, BC, BD)
    s = tl.where(own, _own_logit(zs, zs2, i0, B, D, inv_tau, BM, BD)[:, None], s)
    lse_i = tl.load(lse + i, mask=im, other=0.0)
    w_i = tl.load(wsum + i, mask=im, other=1.0)
    g_i = tl.load(g + i, mask=im, other=0.0)
    p = tl.exp(s - lse_i[:, None])
    ds = tl.where(inside, g_i[:, None] * (p - w / w_i[:, None]) * inv_tau, 0.0)
    return ds, own


@triton.jit
def _sc_bwd_rows_kernel(p_rows, pc, zs, zs2, zc, lse, wsum, g, dzs, dzs2, B, N, C, D, offset, rho, inv_tau,
                        COSINE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr,
                        BD: tl.constexpr):
    i0 = tl.program_id(0) * BM
    i = i0 + tl.arange(0, BM)
    d = tl.arange(0, BD)
    acc = tl.zeros([BM, BD], tl.float32)
    d_own = tl.zeros([BM], tl.float32)
    for j0 in range(0, N, BN):
        ds, own = _ds(p_rows, pc, zs, zs2, zc, lse, wsum, g, i0, j0, B, N, C, D, offset, rho, inv_tau,
                      COSINE, BM, BN, BC, BD)
        d_own += tl.sum(tl.where(own, ds, 0.0), 1)
        j = j0 + tl.arange(0, BN)
        b = tl.load(zc + j[:, None] * D + d[None, :], mask=(j < N)[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(tl.where(own, 0.0, ds), b, input_precision="ieee")
    m = (i < B)[:, None] & (d < D)[None, :]
    a = tl.load(zs + i[:, None] * D + d[None, :], mask=m, other=0.0).to(tl.float32)
    a2 = tl.load(zs2 + i[:, None] * D + d[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(dzs + i[:, None] * D + d[None, :], acc + d_own[:, None] * a2, mask=m)
    tl.store(dzs2 + i[:, None] * D + d[None, :], d_own[:, None] * a, mask=m)


@triton.jit
def _sc_bwd_cols_kernel(p_rows, pc, zs, zs2, zc, lse, wsum, g, dzc, B, N, C, D, offset, rho, inv_tau,
                        COSINE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr,
                        BD: tl.constexpr):
    j0 = tl.program_id(0) * BN
    j = j0 + tl.arange(0, BN)
    d = tl.arange(0, BD)
    acc = tl.zeros([BN, BD], tl.float32)
    for i0 in range(0, B, BM):
        ds, own = _ds(p_rows, pc, zs, zs2, zc, lse, wsum, g, i0, j0, B, N, C, D, offset, rho, inv_tau,
                      COSINE, BM, BN, BC, BD)
        i = i0 + tl.arange(0, BM)
        a = tl.load(zs + i[:, None] * D + d[None, :], mask=(i < B)[:, None] & (d < D)[None, :], other=0.0).to(tl.float32)
        acc += tl.dot(tl.trans(tl.where(own, 0.0, ds)), a, input_precision="ieee")
    tl.store(dzc + j[:, None] * D + d[None, :], acc, mask=(j < N)[:, None] & (d < D)[None, :])


# ---------------------------------------------------------------------------- launchers

BM = BN = 16


def _meta(p, z):
    return dict(BM=BM, BN=BN, BC=max(16, triton.next_power_of_2(p.shape[1])),
                BD=max(16, triton.next_power_of_2(z.shape[1])))


def _forward(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine):
    b, n = z_s.shape[0], z_cols.shape[0]
    loss = torch.empty(b, device=z_s.device, dtype=torch.float32)
    lse, wsum = torch.empty_like(loss), torch.empty_like(loss)
    args = [t.contiguous() for t in (p, p_cols, z_s, z_s2, z_cols)]
    _sc_fwd_kernel[(triton.cdiv(b, BM),)](*args, loss, lse, wsum, b, n, p.shape[1], z_s.shape[1], offset,
                                          rho, 1.0 / tau, COSINE=cosine, **_meta(p, z_s))
    return loss, lse, wsum


def _backward(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, rho, tau, offset, cosine):
    b, n, c, d = z_s.shape[0], z_cols.shape[0], p.shape[1], z_s.shape[1]
    args = [t.contiguous() for t in (p, p_cols, z_s, z_s2, z_cols)] + [lse, wsum, g.float().contiguous()]
    dzs = torch.empty(b, d, device=z_s.device, dtype=torch.float32)
    dzs2 = torch.empty_like(dzs)
    dzc = torch.empty(n, d, device=z_s.device, dtype=torch.float32)
    meta = _meta(p, z_s)
    _sc_bwd_rows_kernel[(triton.cdiv(b, BM),)](*args, dzs, dzs2, b, n, c, d, offset, rho, 1.0 / tau,
                                               COSINE=cosine, **meta)
    _sc_bwd_cols_kernel[(triton.cdiv(n, BN),)](*args, dzc, b, n, c, d, offset, rho, 1.0 / tau,
                                               COSINE=cosine, **meta)
    return dzs.to(z_s.dtype), dzs2.to(z_s2.dtype), dzc.to(z_cols.dtype)


@torch.library.custom_op("lacol::sc_forward", mutates_args=())
def sc_forward(p: torch.Tensor, p_cols: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor, z_cols: torch.Tensor,
               rho: float, tau: float, offset: int, cosine: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-row loss, LSE, W row sums), fp32."""
    return _forward(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine)


@sc_forward.register_fake
def _(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine):
    b = z_s.shape[0]
    return tuple(z_s.new_empty(b, dtype=torch.float32) for _ in range(3))


@torch.library.custom_op("lacol::sc_backward", mutates_args=())
def sc_backward(g: torch.Tensor, p: torch.Tensor, p_cols: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor,
                z_cols: torch.Tensor, lse: torch.Tensor, wsum: torch.Tensor, rho: float, tau: float, offset: int,
                cosine: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, rho, tau, offset, cosine)


@sc_backward.register_fake
def _(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, rho, tau, offset, cosine):
    return torch.empty_like(z_s), torch.empty_like(z_s2), torch.empty_like(z_cols)


class ScLoss(torch.autograd.Function):
    """Per-row L_SC (B,); gradients for z_s, z_s2 and z_cols (the weak probabilities take none)."""

    @staticmethod
    def forward(ctx, p, p_cols, z_s, z_s2, z_cols, rho: float, tau: float, offset: int, cosine: bool):
        p, p_cols = p.detach(), p_cols.detach()
        loss, lse, wsum = sc_forward(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine)
        ctx.save_for_backward(p, p_cols, z_s, z_s2, z_cols, lse, wsum)
        ctx.args = (rho, tau, offset, cosine)
        return loss

    @staticmethod
    def backward(ctx, g):
        p, p_cols, z_s, z_s2, z_cols, lse, wsum = ctx.saved_tensors
        dzs, dzs2, dzc = sc_backward(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, *ctx.args)
        return None, None, dzs, dzs2, dzc, None, None, None, None


def sc_loss_fused(p: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor, rho: float, tau: float,
                  kind: str = "cosine", p_cols: torch.Tensor | None = None, z_cols: torch.Tensor | None = None,
                  offset: int = 0, normaliser: int | None = None) -> torch.Tensor:
    """``losses.sc_loss(label_similarity(p, rho, kind, p_cols, offset), z_s, z_s2, tau, z_cols, offset,
    normaliser)``, fused: W_l and S are made tile by tile and never stored."""
    per_row = ScLoss.apply(p, p if p_cols is None else p_cols, z_s, z_s2, z_s if z_cols is None else z_cols,
                           float(rho), float(tau), int(offset), kind == "cosine")
    return per_row.sum() / (normaliser or z_s.shape[0])
