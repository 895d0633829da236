"""L_MS as fused Triton kernels: per anchor, normalise, gather K negatives by index, K+1 cosine
logits over tau, a stable log-sum-exp; backward without materialising the (B, K, D) gather.

Layers: ``@triton.jit`` kernels -> launchers (``_forward``, ``_backward``) ->
``torch.library.custom_op`` (``lacol::ms_forward``, ``lacol::ms_backward``, visible to
torch.compile) -> ``MsLoss`` (autograd.Function) -> ``ms_loss_fused`` (what ``lacol/losses.py``
dispatches to). Inputs fp32 or bf16; all arithmetic in fp32.

Launch shape: each program handles several anchors (``CONFIGS``: 1-8 anchors x 1-4 warps,
autotuned per (B, D, K) on a GPU), so small per-anchor programs do not leave the GPU idle.

Gradients of the strong embeddings: a row of ``z_s`` receives from its own anchor (the positive)
and from every anchor that drew it as a negative. Two paths: ``deterministic`` (default when
``torch.are_deterministic_algorithms_enabled()``) builds a reverse index once per step (the
references to each row, sorted by anchor; by a sort and a search, with no host sync) and lets
one program per row sum them in that order, without float atomics, so the result is bitwise
reproducible; otherwise each anchor adds its contributions with ``atomic_add``.
Normalisation follows ``F.normalize`` (x / max(||x||, eps)), so a zero row gives zero logits.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import autotuned, launch

EPS = 1e-12


@triton.jit
def _ms_fwd_kernel(zw, zs, neg, loss, lse, u_out, B, D, K, offset, inv_tau,
                   BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, ANCHORS: tl.constexpr):
    """ANCHORS anchors per program (the tail program repeats the last anchor: same values)."""
    for a in tl.static_range(ANCHORS):
        _ms_fwd_anchor(zw, zs, neg, loss, lse, u_out, tl.minimum(tl.program_id(0) * ANCHORS + a, B - 1),
                       D, K, offset, inv_tau, BLOCK_D, BLOCK_K)


@triton.jit
def _ms_fwd_anchor(zw, zs, neg, loss, lse, u_out, i, D, K, offset, inv_tau,
                   BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    d = tl.arange(0, BLOCK_D)
    dm = d < D
    w = tl.load(zw + i * D + d, mask=dm, other=0.0).to(tl.float32)
    u = w / tl.maximum(tl.sqrt(tl.sum(w * w, 0)), 1e-12)
    tl.store(u_out + i * D + d, u, mask=dm)
    # row 0: the positive (own row), rows 1..K: the negatives
    k = tl.arange(0, BLOCK_K)
    km = k < K + 1
    nk = tl.load(neg + i * K + (k - 1), mask=(k >= 1) & km, other=0)
    rows = tl.where(k == 0, offset + i, nk).to(tl.int64)
    v = tl.load(zs + rows[:, None] * D + d[None, :], mask=km[:, None] & dm[None, :], other=0.0).to(tl.float32)
    v = v / tl.maximum(tl.sqrt(tl.sum(v * v, 1)), 1e-12)[:, None]
    logits = tl.sum(v * u[None, :], 1) * inv_tau
    logits = tl.where(km, logits, float("-inf"))
    m = tl.max(logits, 0)
    s = m + tl.log(tl.sum(tl.exp(logits - m), 0))
    pos = tl.sum(tl.where(k == 0, logits, 0.0), 0)
    tl.store(loss + i, s - pos)
    tl.store(lse + i, s)


@triton.jit
def _ms_bwd_anchor_kernel(zw, zs, neg, lse, u_in, g, dzw, dzs, B, D, K, offset, inv_tau,
                          BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, ATOMIC: tl.constexpr,
                          ANCHORS: tl.constexpr):
    for a in tl.static_range(ANCHORS):
        i = tl.program_id(0) * ANCHORS + a
        _ms_bwd_anchor(zw, zs, neg, lse, u_in, g, dzw, dzs, tl.minimum(i, B - 1), i < B, D, K, offset, inv_tau,
                       BLOCK_D, BLOCK_K, ATOMIC)


@triton.jit
def _ms_bwd_anchor(zw, zs, neg, lse, u_in, g, dzw, dzs, i, own, D, K, offset, inv_tau,
                   BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, ATOMIC: tl.constexpr):
    """dz_w of anchor i (and, with ATOMIC, its contributions to dz_s by atomic adds, unless ``own``
    is False: a tail program's repeat of the last anchor must not add twice)."""
    d = tl.arange(0, BLOCK_D)
    dm = d < D
    w = tl.load(zw + i * D + d, mask=dm, other=0.0).to(tl.float32)
    nw = tl.sqrt(tl.sum(w * w, 0))
    u = tl.load(u_in + i * D + d, mask=dm, other=0.0)
    k = tl.arange(0, BLOCK_K)
    km = k < K + 1
    nk = tl.load(neg + i * K + (k - 1), mask=(k >= 1) & km, other=0)
    rows = tl.where(k == 0, offset + i, nk).to(tl.int64)
    raw = tl.load(zs + rows[:, None] * D + d[None, :], mask=km[:, None] & dm[None, :], other=0.0).to(tl.float32)
    nv = tl.sqrt(tl.sum(raw * raw, 1))
    v = raw / tl.maximum(nv, 1e-12)[:, None]
    logits = tl.sum(v * u[None, :], 1) * inv_tau
    p = tl.where(km, tl.exp(logits - tl.load(lse + i)), 0.0)
    gi = tl.load(g + i)
    dl = gi * (p - tl.where(k == 0, 1.0, 0.0)) * inv_tau  # dL/dlogit * 1/tau
    du = tl.sum(dl[:, None] * v, 0)
    # through u = w / max(|w|, eps): (du - u <u, du>) / |w|, or du / eps below eps
    dw = tl.where(nw > 1e-12, (du - u * tl.sum(u * du, 0)) / tl.maximum(nw, 1e-12), du / 1e-12)
    tl.store(dzw + i * D + d, dw, mask=dm)
    if ATOMIC:
        dv = dl[:, None] * u[None, :]
        proj = tl.sum(v * dv, 1)
        draw = tl.where((nv > 1e-12)[:, None], (dv - v * proj[:, None]) / tl.maximum(nv, 1e-12)[:, None],
                        dv / 1e-12)
        mine = k < tl.where(own, K + 1, 0)  # no rows at all for a tail program's repeated anchor
        tl.atomic_add(dzs + rows[:, None] * D + d[None, :], draw, mask=mine[:, None] & dm[None, :])


@triton.jit
def _ms_bwd_rows_kernel(zs, ref_start, ref_anchor, ref_pos, lse, u_in, g, dzs, D, inv_tau,
                        BLOCK_D: tl.constexpr):
    """dz_s of row j: its references (anchor, positive?) summed in the reverse index's order."""
    j = tl.program_id(0)
    d = tl.arange(0, BLOCK_D)
    dm = d < D
    raw = tl.load(zs + j.to(tl.int64) * D + d, mask=dm, other=0.0).to(tl.float32)
    nv = tl.sqrt(tl.sum(raw * raw, 0))
    v = raw / tl.maximum(nv, 1e-12)
    start = tl.load(ref_start + j)
    end = tl.load(ref_start + j + 1)
    dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    for r in range(start, end):
        a = tl.load(ref_anchor + r).to(tl.int64)
        u = tl.load(u_in + a * D + d, mask=dm, other=0.0)
        logit = tl.sum(u * v, 0) * inv_tau
        p = tl.exp(logit - tl.load(lse + a))
        dl = tl.load(g + a) * (p - tl.load(ref_pos + r).to(tl.float32)) * inv_tau
        dv += dl * u
    draw = tl.where(nv > 1e-12, (dv - v * tl.sum(v * dv, 0)) / tl.maximum(nv, 1e-12), dv / 1e-12)
    tl.store(dzs + j.to(tl.int64) * D + d, draw, mask=dm)


# ---------------------------------------------------------------------------- launchers

CONFIGS = [triton.Config({"ANCHORS": a}, num_warps=w) for a in (1, 2, 4, 8) for w in (1, 2, 4)]
"""Launch shapes tried on a GPU (anchors per program x warps), tuned per (B, D, K); pruned to the
device's shared memory like L_SC's (``tuning.prune_to_device``)."""
FORCE: triton.Config | None = None
"""A configuration to launch with instead of tuning (tests, ``lacol-bench aot``)."""
INTERPRETED = triton.Config({"ANCHORS": 4})
"""The shape Triton's interpreter runs (it has no tuner)."""
_fwd_tuned = autotuned(_ms_fwd_kernel, CONFIGS, ["B", "D", "K"])
_bwd_tuned = autotuned(_ms_bwd_anchor_kernel, CONFIGS, ["B", "D", "K", "ATOMIC"], reset_to_zero=["dzs"])


def _launch(kernel, tuned, b: int, *args, **meta) -> None:
    """The kernel over ``b`` anchors."""
    launch(kernel, tuned, FORCE, INTERPRETED, lambda m: (triton.cdiv(b, m["ANCHORS"]),), *args, **meta)


def _blocks(d: int, k: int) -> tuple[int, int]:
    return triton.next_power_of_2(d), triton.next_power_of_2(k + 1)


def _forward(z_w, z_s, neg, tau: float, offset: int):
    b, d = z_w.shape
    k = neg.shape[1]
    loss = torch.empty(b, device=z_w.device, dtype=torch.float32)
    lse = torch.empty_like(loss)
    u = torch.empty(b, d, device=z_w.device, dtype=torch.float32)
    bd, bk = _blocks(d, k)
    _launch(_ms_fwd_kernel, _fwd_tuned, b, z_w.contiguous(), z_s.contiguous(), neg.contiguous(), loss, lse, u,
            b, d, k, offset, 1.0 / tau, BLOCK_D=bd, BLOCK_K=bk)
    return loss, lse, u


def reverse_index(neg: torch.Tensor, rows: int, offset: int):
    """CSR of the references to each z_s row: (start (rows+1,), anchor, is_positive), sorted by
    row and then by anchor (positive first): built once per step, deterministic."""
    b, k = neg.shape
    anchors = torch.arange(b, device=neg.device)
    target = torch.cat([anchors + offset, neg.reshape(-1)])
    anchor = torch.cat([anchors, anchors.repeat_interleave(k)])
    pos = torch.cat([torch.ones(b, dtype=torch.int32, device=neg.device),
                     torch.zeros(b * k, dtype=torch.int32, device=neg.device)])
    order = torch.sort(target * (2 * b) + anchor * 2 + (1 - pos), stable=True).indices
    # row j's references start where the sorted targets reach j: no bincount (a host sync on CUDA)
    start = torch.searchsorted(target[order], torch.arange(rows + 1, device=neg.device))
    return start, anchor[order].contiguous(), pos[order].contiguous()


def _backward(g, z_w, z_s, neg, lse, u, tau: float, offset: int, deterministic: bool):
    b, d = z_w.shape
    k = neg.shape[1]
    bd, bk = _blocks(d, k)
    g = g.float().contiguous()
    dzw = torch.empty(b, d, device=z_w.device, dtype=torch.float32)
    dzs = torch.zeros(z_s.shape, device=z_s.device, dtype=torch.float32)
    zw, zs, neg = z_w.contiguous(), z_s.contiguous(), neg.contiguous()
    _launch(_ms_bwd_anchor_kernel, _bwd_tuned, b, zw, zs, neg, lse, u, g, dzw, dzs, b, d, k, offset, 1.0 / tau,
            BLOCK_D=bd, BLOCK_K=bk, ATOMIC=not deterministic)
    if deterministic:
        start, anchor, pos = reverse_index(neg, z_s.shape[0], offset)
        _ms_bwd_rows_kernel[(z_s.shape[0],)](zs, start, anchor, pos, lse, u, g, dzs, d, 1.0 / tau, BLOCK_D=bd)
    return dzw.to(z_w.dtype), dzs.to(z_s.dtype)


# ---------------------------------------------------------------------------- torch ops

@torch.library.custom_op("lacol::ms_forward", mutates_args=())
def ms_forward(z_w: torch.Tensor, z_s: torch.Tensor, neg: torch.Tensor, tau: float,
               offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-anchor loss, per-anchor LSE, normalised z_w), all fp32."""
    return _forward(z_w, z_s, neg, tau, offset)


@ms_forward.register_fake
def _(z_w, z_s, neg, tau, offset):
    b, d = z_w.shape
    return (z_w.new_empty(b, dtype=torch.float32), z_w.new_empty(b, dtype=torch.float32),
            z_w.new_empty(b, d, dtype=torch.float32))


@torch.library.custom_op("lacol::ms_backward", mutates_args=())
def ms_backward(g: torch.Tensor, z_w: torch.Tensor, z_s: torch.Tensor, neg: torch.Tensor, lse: torch.Tensor,
                u: torch.Tensor, tau: float, offset: int, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(g, z_w, z_s, neg, lse, u, tau, offset, deterministic)


@ms_backward.register_fake
def _(g, z_w, z_s, neg, lse, u, tau, offset, deterministic):
    return torch.empty_like(z_w), torch.empty_like(z_s)


class MsLoss(torch.autograd.Function):
    """Per-anchor L_MS (B,) with gradients for z_w and z_s."""

    @staticmethod
    def forward(ctx, z_w, z_s, neg, tau: float, offset: int, deterministic: bool):
        loss, lse, u = ms_forward(z_w, z_s, neg, tau, offset)
        ctx.save_for_backward(z_w, z_s, neg, lse, u)
        ctx.tau, ctx.offset, ctx.deterministic = tau, offset, deterministic
        return loss

    @staticmethod
    def backward(ctx, g):
        z_w, z_s, neg, lse, u = ctx.saved_tensors
        dzw, dzs = ms_backward(g, z_w, z_s, neg, lse, u, ctx.tau, ctx.offset, ctx.deterministic)
        return dzw, dzs, None, None, None, None


def ms_loss_fused(z_w: torch.Tensor, z_s: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, tau: float,
                  normaliser: torch.Tensor | None = None, offset: int = 0,
                  deterministic: bool | None = None) -> torch.Tensor:
    """``losses.ms_loss`` of the L2-normalised inputs, fused (same arguments and result)."""
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    per_anchor = MsLoss.apply(z_w, z_s, neg, tau, offset, deterministic)
    n = valid.sum() if normaliser is None else normaliser
    return (per_anchor * valid.float()).sum() / n.clamp_min(1)
