"""L_SC as tiled Triton kernels: the row-wise soft cross-entropy between W_l (thresholded
label-space similarity of weak probabilities, diagonal 1, rows normalised) and softmax(S)
(S_ij = <z_s_i, z_j> / tau, the diagonal <z_s_i, z_s2_i> / tau), with an online log-sum-exp over
column tiles, so neither (B, N) matrix is ever stored.

Per row i: loss_i = LSE_i - sum_j w_ij S_ij / W_i, with W_i = sum_j w_ij (unnormalised w).
Backward: dS_ij = g_i (softmax_ij - w_ij / W_i) / tau; one kernel per row tile gives dz_s and
dz_s2, one per column tile gives dz_cols (recomputing the w and S tiles from the saved per-row
LSE_i, W_i and diagonal logit), so no float atomics: deterministic. Layers as in ``ms.py``.

Speed: the probabilities are normalised once per call (cosine), not per tile; a program loads its
own row (or column) tiles once, outside its loop; tile sizes are autotuned on a GPU (``CONFIGS``:
64/128 x 64/128, 4/8 warps, 2/3 stages); products run on tensor cores: bf16 embeddings as bf16
(fp32 accumulation), fp32 ones and the probabilities in 3xTF32 (``tf32x3``: about fp32 accuracy;
the tests hold the fused loss to 1e-5 and its gradients to 1e-4 of the reference). Peak memory
beyond the inputs: O(B) (three per-row statistics) and the normalised probabilities, O(B * C).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .tuning import autotuned, launch

INTERPRET = triton.knobs.runtime.interpret


@triton.jit
def _load_rows(p, z, r0, R, C, D, BR: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, LOWP: tl.constexpr):
    """Rows r0.. of the (normalised) probabilities, fp32, and of the embeddings (bf16 with LOWP)."""
    r = r0 + tl.arange(0, BR)
    c = tl.arange(0, BC)
    d = tl.arange(0, BD)
    pr = tl.load(p + r[:, None] * C + c[None, :], mask=(r < R)[:, None] & (c < C)[None, :], other=0.0)
    zr = tl.load(z + r[:, None] * D + d[None, :], mask=(r < R)[:, None] & (d < D)[None, :], other=0.0)
    if not LOWP:
        zr = zr.to(tl.float32)
    return pr.to(tl.float32), zr


@triton.jit
def _mm(x, y, LOWP: tl.constexpr):
    """x @ y on tensor cores: bf16 operands (LOWP) or 3xTF32, fp32 accumulation."""
    # One return, after both branches: Triton compiles the statements after a constexpr `if`
    # that returns, so an early return here would still build an fp32 x bf16 dot for bf16 inputs.
    if LOWP:
        out = tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
    else:
        out = tl.dot(x, y, input_precision="tf32x3")
    return out


@triton.jit
def _tile(pr, a, pc, b, i, j, B, N, offset, rho, inv_tau, LOWP: tl.constexpr):
    """(w, S, own, inside) of rows i x columns j from loaded tiles; w unnormalised and
    thresholded, own = the diagonal (whose S the caller replaces), inside = both in range."""
    w = tl.dot(pr, tl.trans(pc), input_precision="tf32x3")
    own = j[None, :] == (i + offset)[:, None]
    inside = (i < B)[:, None] & (j < N)[None, :]
    w = tl.where(own, 1.0, w)
    w = tl.where((w >= rho) & inside, w, 0.0)
    s = _mm(a, tl.trans(b), LOWP) * inv_tau
    return w, s, own, inside


@triton.jit
def _sc_fwd_kernel(p_rows, pc, zs, zs2, zc, loss, lse_out, wsum_out, own_out, B, N, C, D, offset, rho, inv_tau,
                   BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, LOWP: tl.constexpr):
    i0 = tl.program_id(0) * BM
    i = i0 + tl.arange(0, BM)
    im = i < B
    pr, a = _load_rows(p_rows, zs, i0, B, C, D, BM, BC, BD, LOWP)
    d = tl.arange(0, BD)
    a2 = tl.load(zs2 + i[:, None] * D + d[None, :], mask=im[:, None] & (d < D)[None, :], other=0.0)
    s_own = tl.sum(a.to(tl.float32) * a2.to(tl.float32), 1) * inv_tau
    m = tl.full([BM], -1e30, tl.float32)
    l = tl.zeros([BM], tl.float32)
    wsum = tl.zeros([BM], tl.float32)
    ws = tl.zeros([BM], tl.float32)
    for j0 in range(0, N, BN):
        pcol, b = _load_rows(pc, zc, j0, N, C, D, BN, BC, BD, LOWP)
        w, s, own, inside = _tile(pr, a, pcol, b, i, j0 + tl.arange(0, BN), B, N, offset, rho, inv_tau, LOWP)
        s = tl.where(own, s_own[:, None], s)
        s = tl.where(inside, s, -1e30)  # finite: a padded row stays NaN-free
        m_new = tl.maximum(m, tl.max(s, 1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
        m = m_new
        wsum += tl.sum(w, 1)
        ws += tl.sum(tl.where(inside, w * s, 0.0), 1)
    lse = m + tl.log(l)
    tl.store(loss + i, lse - ws / tl.where(im, wsum, 1.0), mask=im)
    tl.store(lse_out + i, lse, mask=im)
    tl.store(wsum_out + i, wsum, mask=im)
    tl.store(own_out + i, s_own, mask=im)


@triton.jit
def _ds(w, s, own, inside, i, B, lse, wsum, s_own, g, inv_tau):
    """dL/dS * (1/tau) of a tile, from the per-row statistics the forward saved."""
    im = i < B
    s = tl.where(own, tl.load(s_own + i, mask=im, other=0.0)[:, None], s)
    lse_i = tl.load(lse + i, mask=im, other=0.0)
    w_i = tl.load(wsum + i, mask=im, other=1.0)
    g_i = tl.load(g + i, mask=im, other=0.0)
    p = tl.exp(s - lse_i[:, None])
    return tl.where(inside, g_i[:, None] * (p - w / w_i[:, None]) * inv_tau, 0.0)


@triton.jit
def _sc_bwd_rows_kernel(p_rows, pc, zs, zs2, zc, lse, wsum, s_own, g, dzs, dzs2, B, N, C, D, offset, rho, inv_tau,
                        BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr,
                        LOWP: tl.constexpr):
    i0 = tl.program_id(0) * BM
    i = i0 + tl.arange(0, BM)
    d = tl.arange(0, BD)
    pr, a = _load_rows(p_rows, zs, i0, B, C, D, BM, BC, BD, LOWP)
    acc = tl.zeros([BM, BD], tl.float32)
    d_own = tl.zeros([BM], tl.float32)
    for j0 in range(0, N, BN):
        pcol, b = _load_rows(pc, zc, j0, N, C, D, BN, BC, BD, LOWP)
        w, s, own, inside = _tile(pr, a, pcol, b, i, j0 + tl.arange(0, BN), B, N, offset, rho, inv_tau, LOWP)
        ds = _ds(w, s, own, inside, i, B, lse, wsum, s_own, g, inv_tau)
        d_own += tl.sum(tl.where(own, ds, 0.0), 1)
        acc += _mm(tl.where(own, 0.0, ds), b, LOWP)
    m = (i < B)[:, None] & (d < D)[None, :]
    a2 = tl.load(zs2 + i[:, None] * D + d[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(dzs + i[:, None] * D + d[None, :], acc + d_own[:, None] * a2, mask=m)
    tl.store(dzs2 + i[:, None] * D + d[None, :], d_own[:, None] * a.to(tl.float32), mask=m)


@triton.jit
def _sc_bwd_cols_kernel(p_rows, pc, zs, zs2, zc, lse, wsum, s_own, g, dzc, B, N, C, D, offset, rho, inv_tau,
                        BM: tl.constexpr, BN: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr,
                        LOWP: tl.constexpr):
    j0 = tl.program_id(0) * BN
    j = j0 + tl.arange(0, BN)
    d = tl.arange(0, BD)
    pcol, b = _load_rows(pc, zc, j0, N, C, D, BN, BC, BD, LOWP)
    acc = tl.zeros([BN, BD], tl.float32)
    for i0 in range(0, B, BM):
        i = i0 + tl.arange(0, BM)
        pr, a = _load_rows(p_rows, zs, i0, B, C, D, BM, BC, BD, LOWP)
        w, s, own, inside = _tile(pr, a, pcol, b, i, j, B, N, offset, rho, inv_tau, LOWP)
        ds = _ds(w, s, own, inside, i, B, lse, wsum, s_own, g, inv_tau)
        acc += _mm(tl.trans(tl.where(own, 0.0, ds)), a, LOWP)
    tl.store(dzc + j[:, None] * D + d[None, :], acc, mask=(j < N)[:, None] & (d < D)[None, :])


# ---------------------------------------------------------------------------- launchers

CONFIGS = [triton.Config({"BM": m, "BN": n}, num_warps=w, num_stages=st, maxnreg=255)
           for m, n, w, st in [(64, 64, 8, 2), (64, 64, 8, 3), (64, 64, 4, 2), (64, 32, 8, 2), (64, 32, 4, 3),
                               (32, 64, 8, 2), (32, 64, 4, 3), (32, 32, 4, 2), (128, 32, 8, 2), (128, 32, 8, 3),
                               (32, 128, 8, 2), (128, 64, 8, 2), (128, 64, 8, 3), (64, 128, 8, 2),
                               (64, 128, 8, 3), (128, 128, 8, 2)]]
"""Tile shapes tried on a GPU, tuned per (B, N, C, D, dtype). Those that do not fit the device's
shared memory are pruned before timing (``tuning.prune_to_device``): compiled ahead of time at
D=128 (``lacol-bench aot --all``, BENCHMARKS.md), 11 of the 16 fit an H100/H200 in fp32 and 8 an
A100; in bf16 all 16 fit both. ``maxnreg=255``: without it the ptxas of Triton's
wheel gives the fp32 kernels 32 registers on sm_80 (9-17 KB of spills per thread); with it, 255.
Mostly 8 warps: the fp32 products run as 3xTF32 (three MMAs on split operands), whose operand
copies fill 255 registers at 4 warps; 8 warps halve each thread's share."""
FORCE: triton.Config | None = None
"""A configuration to launch with instead of tuning (tests, ``lacol-bench aot``)."""
INTERPRETED = triton.Config({"BM": 16, "BN": 16})
"""The shape Triton's interpreter runs (it has no tuner)."""
_KEY = ["B", "N", "C", "D", "LOWP"]
_tuned = {k: autotuned(k, CONFIGS, _KEY) for k in (_sc_fwd_kernel, _sc_bwd_rows_kernel, _sc_bwd_cols_kernel)}


def _launch(kernel, rows_of: int, by: str, *args, **meta) -> None:
    """``kernel`` over ``rows_of`` rows in tiles of ``by`` (BM or BN)."""
    launch(kernel, _tuned[kernel], FORCE, INTERPRETED, lambda m: (triton.cdiv(rows_of, m[by]),), *args, **meta)


def _inputs(p, p_cols, z_s, z_s2, z_cols, cosine: bool):
    """(rows' probabilities, columns' probabilities, z_s, z_s2, z_cols), contiguous; cosine: the
    probabilities normalised once, here (fp32)."""
    prep = (lambda t: F.normalize(t.float(), dim=1)) if cosine else (lambda t: t.float())
    pc = prep(p_cols) if p_cols is not p else None
    pr = prep(p)
    return [pr.contiguous(), (pc if pc is not None else pr).contiguous(), z_s.contiguous(), z_s2.contiguous(),
            z_cols.contiguous()]


def _meta(p, z):
    return dict(BC=max(16, triton.next_power_of_2(p.shape[1])), BD=max(16, triton.next_power_of_2(z.shape[1])),
                LOWP=z.dtype == torch.bfloat16 and not INTERPRET)


def _forward(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine):
    b, n = z_s.shape[0], z_cols.shape[0]
    loss = torch.empty(b, device=z_s.device, dtype=torch.float32)
    lse, wsum, s_own = torch.empty_like(loss), torch.empty_like(loss), torch.empty_like(loss)
    _launch(_sc_fwd_kernel, b, "BM", *_inputs(p, p_cols, z_s, z_s2, z_cols, cosine), loss, lse, wsum, s_own,
            b, n, p.shape[1], z_s.shape[1], offset, rho, 1.0 / tau, **_meta(p, z_s))
    return loss, lse, wsum, s_own


def _backward(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, s_own, rho, tau, offset, cosine):
    b, n, c, d = z_s.shape[0], z_cols.shape[0], p.shape[1], z_s.shape[1]
    args = _inputs(p, p_cols, z_s, z_s2, z_cols, cosine) + [lse, wsum, s_own, g.float().contiguous()]
    dzs = torch.empty(b, d, device=z_s.device, dtype=torch.float32)
    dzs2 = torch.empty_like(dzs)
    dzc = torch.empty(n, d, device=z_s.device, dtype=torch.float32)
    meta = _meta(p, z_s)
    _launch(_sc_bwd_rows_kernel, b, "BM", *args, dzs, dzs2, b, n, c, d, offset, rho, 1.0 / tau, **meta)
    _launch(_sc_bwd_cols_kernel, n, "BN", *args, dzc, b, n, c, d, offset, rho, 1.0 / tau, **meta)
    return dzs.to(z_s.dtype), dzs2.to(z_s2.dtype), dzc.to(z_cols.dtype)


@torch.library.custom_op("lacol::sc_forward", mutates_args=())
def sc_forward(p: torch.Tensor, p_cols: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor, z_cols: torch.Tensor,
               rho: float, tau: float, offset: int,
               cosine: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-row loss, LSE, W row sums, diagonal logit), fp32."""
    return _forward(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine)


@sc_forward.register_fake
def _(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine):
    b = z_s.shape[0]
    return tuple(z_s.new_empty(b, dtype=torch.float32) for _ in range(4))


@torch.library.custom_op("lacol::sc_backward", mutates_args=())
def sc_backward(g: torch.Tensor, p: torch.Tensor, p_cols: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor,
                z_cols: torch.Tensor, lse: torch.Tensor, wsum: torch.Tensor, s_own: torch.Tensor, rho: float,
                tau: float, offset: int, cosine: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, s_own, rho, tau, offset, cosine)


@sc_backward.register_fake
def _(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, s_own, rho, tau, offset, cosine):
    return torch.empty_like(z_s), torch.empty_like(z_s2), torch.empty_like(z_cols)


class ScLoss(torch.autograd.Function):
    """Per-row L_SC (B,); gradients for z_s, z_s2 and z_cols (the weak probabilities take none)."""

    @staticmethod
    def forward(ctx, p, p_cols, z_s, z_s2, z_cols, rho: float, tau: float, offset: int, cosine: bool):
        p, p_cols = p.detach(), p_cols.detach()
        loss, lse, wsum, s_own = sc_forward(p, p_cols, z_s, z_s2, z_cols, rho, tau, offset, cosine)
        ctx.save_for_backward(p, p_cols, z_s, z_s2, z_cols, lse, wsum, s_own)
        ctx.args = (rho, tau, offset, cosine)
        return loss

    @staticmethod
    def backward(ctx, g):
        p, p_cols, z_s, z_s2, z_cols, lse, wsum, s_own = ctx.saved_tensors
        dzs, dzs2, dzc = sc_backward(g, p, p_cols, z_s, z_s2, z_cols, lse, wsum, s_own, *ctx.args)
        return None, None, dzs, dzs2, dzc, None, None, None, None


def sc_loss_fused(p: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor, rho: float, tau: float,
                  kind: str = "cosine", p_cols: torch.Tensor | None = None, z_cols: torch.Tensor | None = None,
                  offset: int = 0, normaliser: int | None = None) -> torch.Tensor:
    """``losses.sc_loss(label_similarity(p, rho, kind, p_cols, offset), z_s, z_s2, tau, z_cols, offset,
    normaliser)``, fused: W_l and S are made tile by tile and never stored."""
    per_row = ScLoss.apply(p, p if p_cols is None else p_cols, z_s, z_s2, z_s if z_cols is None else z_cols,
                           float(rho), float(tau), int(offset), kind == "cosine")
    return per_row.sum() / (normaliser or z_s.shape[0])
