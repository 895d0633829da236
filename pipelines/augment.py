"""Batched, per-sample augmentation in torch, on any device: the weak and strong views of LaCoL.

Input: a uint8 batch, (B, H, W, C) or (B, C, H, W). Output per view: a normalised float tensor
(B, C, h, w) in channels_last memory format. Every sample draws its own crop, flip and
RandAugment ops, but the work is done batch-wide:

- crop and flip are indexing (no interpolation), so a weak view never resamples;
- RandAugment's colour ops run on the uint8 subset of samples that drew them;
- a strong view's geometric ops (rotate, shear, translate) are composed into one affine map per
  sample and applied once, by nearest-neighbour gather, to the samples that drew one.

Semantics follow PIL (ImageOps/ImageEnhance) and torchvision's RandAugment (31 magnitude bins,
nearest interpolation, fill 0). One deliberate difference: geometric ops are applied after the
colour ops of the same view (so that they compose into one resampling); the black fill they
introduce is therefore never touched by a later colour op.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .sharding import upload
from .views import GEOMETRIC, OPS, Planner, ViewPlan, ViewSpec


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    """A uint8 (B,H,W,C) or (B,C,H,W) batch as contiguous (B,H,W,C); C must be 1 or 3."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"augment takes a uint8 batch of 4 dims, got {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] in (1, 3):
        return x.contiguous()
    if x.shape[1] in (1, 3):
        return x.permute(0, 2, 3, 1).contiguous()
    raise ValueError(f"augment: cannot tell the channel dim of shape {tuple(x.shape)} (need C = 1 or 3)")


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[rows] along dim 0. On CPU, per-sample slice copies (memcpy) beat the index kernels."""
    if x.device.type == "cpu":
        return torch.stack([x[i] for i in rows.tolist()])
    return x.index_select(0, rows)


def put_rows(x: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """x[rows] = values along dim 0, in place."""
    if x.device.type == "cpu":
        for j, i in enumerate(rows.tolist()):
            x[i].copy_(values[j])
    else:
        x.index_copy_(0, rows, values)


# ---------------------------------------------------------------- crop and flip by indexing

def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int,
              flip: torch.Tensor | None, batched: bool = False) -> torch.Tensor:
    """Per-sample size x size windows at (top, left), flipped where ``flip``; outside -> 0.
    ``batched`` (always on a GPU): one gather, no host sync, whatever the batch."""
    b, h, w, _ = x.shape
    if x.device.type == "cpu" and not batched:
        # On CPU, B slice copies beat one advanced-indexing gather by ~5x (measured).
        padded = bool(top.min() < 0 or left.min() < 0 or top.max() + size > h or left.max() + size > w)
        shape = (b, size, size, x.shape[-1])
        out = x.new_zeros(shape) if padded else x.new_empty(shape)  # zeros only where padding shows
        for i, (t, l) in enumerate(zip(top.tolist(), left.tolist())):
            t0, l0 = max(t, 0), max(l, 0)
            t1, l1 = min(t + size, h), min(l + size, w)
            out[i, t0 - t:t1 - t, l0 - l:l1 - l] = x[i, t0:t1, l0:l1]
        if flip is not None and bool(flip.any()):
            rows = torch.nonzero(flip).flatten()
            put_rows(out, rows, take_rows(out, rows).flip(2))
        return out
    ar = torch.arange(size, device=x.device)
    rows = top[:, None] + ar
    cols = left[:, None] + ar
    if flip is not None:
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = x[bi, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return out.mul_(inside[..., None])


# ---------------------------------------------------------------- colour ops (uint8 in, uint8 out)

def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's Image.blend: degenerate + f * (x - degenerate), truncated to uint8."""
    f = factor.view(-1, 1, 1, 1).float()
    d = degenerate.float()
    out = (x.float() - d).mul_(f).add_(d)
    return out.clamp_(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB->L conversion (ITU-R 601-2 luma, 16-bit fixed point) as float (n,H,W,1).

    Exact in float32: the largest sum, 255 * 65536 + 32768, is below 2**24."""
    xf = x.float()
    if x.shape[-1] == 1:
        return xf
    y = xf[..., 0:1] * 19595 + xf[..., 1:2] * 38470 + xf[..., 2:3] * 7471 + 32768
    return y.div_(65536).floor_()


def _autocontrast_map(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageOps.autocontrast's (cutoff 0) per-sample, per-channel map ``int(p * scale + offset)``
    as float64 (n, c) scale and offset; a constant channel maps to itself."""
    n, h, w, c = x.shape
    lo, hi = torch.aminmax(x.view(n, h * w, c), dim=1)
    lo, hi = lo.double(), hi.double()
    flat = hi <= lo
    # PIL's arithmetic, in float64: offset = -lo * scale. A true division: torch evaluates
    # `255.0 / tensor` as a reciprocal times 255, which is off in the last bit and flips int()
    # at exact integers.
    scale = torch.where(flat, 1.0, torch.full_like(hi, 255.0) / (hi - lo).clamp_(min=1))
    return scale, torch.where(flat, 0.0, -lo * scale)


def autocontrast(x: torch.Tensor, v=None) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0) per channel; a constant channel is left as it is."""
    n, _, _, c = x.shape
    scale, offset = _autocontrast_map(x)
    out = x.double().mul_(scale.view(n, 1, 1, c)).add_(offset.view(n, 1, 1, c))
    return out.floor_().clamp_(0, 255).to(torch.uint8)


def _equalize_lut(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageOps.equalize's per-sample, per-channel table (n * c, 256) (int64), and the index of
    each pixel of ``x`` into its flattened rows. Histograms by ``index_add_``: no bincount (a
    host sync on a GPU)."""
    n, _, _, c = x.shape
    dev = x.device
    idx = x.long() + (torch.arange(n * c, device=dev) * 256).view(n, 1, 1, c)
    hist = torch.zeros(n * c * 256, dtype=torch.long, device=dev)
    hist.index_add_(0, idx.view(-1), torch.ones((), dtype=torch.long, device=dev).expand(idx.numel()))
    hist = hist.view(n * c, 256)
    nonzero = hist > 0
    last = 255 - nonzero.flip(1).int().argmax(1)
    step = (hist.sum(1) - hist.gather(1, last[:, None]).squeeze(1)) // 255
    cum = torch.cumsum(hist, 1) - hist
    lut = ((step // 2)[:, None] + cum) // step.clamp(min=1)[:, None]
    keep = (step == 0) | (nonzero.sum(1) <= 1)
    return torch.where(keep[:, None], torch.arange(256, device=dev).expand_as(lut), lut.clamp(max=255)), idx


def equalize(x: torch.Tensor, v=None) -> torch.Tensor:
    """ImageOps.equalize per channel, with a batched histogram."""
    lut, idx = _equalize_lut(x)
    return lut.to(torch.uint8).reshape(-1).index_select(0, idx.view(-1)).view(x.shape)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert pixels >= threshold. 255 - x == x ^ 255 for uint8, and for integer pixels
    x >= t exactly when x >= ceil(t)."""
    t = threshold.ceil().clamp(0, 255).to(torch.uint8).view(-1, 1, 1, 1)
    return x ^ (x >= t).to(torch.uint8).mul_(255)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    mask = (0xFF << (8 - bits.long())) & 0xFF
    return x & mask.to(torch.uint8).view(-1, 1, 1, 1)


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] == 1:
        return x
    return _blend(_gray(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = (_gray(x).mean((1, 2, 3)) + 0.5).floor()
    return _blend(mean.view(-1, 1, 1, 1), x, factor)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    out = x.float().mul_(factor.view(-1, 1, 1, 1).float())
    return out.clamp_(0, 255).to(torch.uint8)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend with PIL's SMOOTH filter (1 1 1 / 1 5 1 / 1 1 1, /13, rounded),
    whose one-pixel border keeps the input."""
    xf = x.float()
    rows = xf[:, :-2] + xf[:, 1:-1] + xf[:, 2:]
    box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
    degenerate = xf.clone()
    degenerate[:, 1:-1, 1:-1] = box.add_(xf[:, 1:-1, 1:-1], alpha=4).add_(6.5).div_(13).floor_()
    f = factor.view(-1, 1, 1, 1).float()
    return xf.sub_(degenerate).mul_(f).add_(degenerate).clamp_(0, 255).to(torch.uint8)


COLOUR_FNS = {"autocontrast": autocontrast, "equalize": equalize, "solarize": solarize,
              "color": color, "posterize": posterize, "contrast": contrast,
              "brightness": brightness, "sharpness": sharpness}



def warp_nearest(x: torch.Tensor, inv: torch.Tensor, out_size: int | None = None) -> torch.Tensor:
    """Resample x (n,H,W,C) uint8 through inverse maps (n,3,3), nearest, fill 0 (PIL's convention:
    input = floor(M @ (x + 0.5, y + 0.5)))."""
    n, h, w, c = x.shape
    s = out_size or h
    ar = torch.arange(s, device=x.device, dtype=torch.float32) + 0.5
    m = inv.float()
    xs = torch.addcmul(m[:, 0, 2, None, None] + m[:, 0, 1, None, None] * ar[None, :, None],
                       m[:, 0, 0, None, None], ar[None, None, :]).floor_()
    ys = torch.addcmul(m[:, 1, 2, None, None] + m[:, 1, 1, None, None] * ar[None, :, None],
                       m[:, 1, 0, None, None], ar[None, None, :]).floor_()
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    # Flat pixel index in float32 (exact below 2**24 pixels), outside pixels sent to a zero row.
    base = torch.arange(n, device=x.device, dtype=torch.float32).view(n, 1, 1) * (h * w)
    flat = torch.where(inside, ys.mul_(w).add_(xs).add_(base), float(n * h * w)).long()
    src = torch.cat([x.reshape(n * h * w, c), x.new_zeros(1, c)])
    return src.index_select(0, flat.view(-1)).view(n, s, s, c)


def cutout(x: torch.Tensor, spec: ViewSpec, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """A grey (127) square of side ``cutout * size`` centred at (cy, cx) per sample."""
    b, h, w, _ = x.shape
    half = max(1, int(spec.cutout * spec.size)) // 2
    ys = ((torch.arange(h, device=x.device)[None] - cy[:, None]).abs() <= half)[:, :, None]
    xs = ((torch.arange(w, device=x.device)[None] - cx[:, None]).abs() <= half)[:, None, :]
    return x.masked_fill((ys & xs)[..., None], 127)


# ---------------------------------------------------------------- the augmenter

class Augmenter:
    """Makes views from uint8 batches. One generator per augmenter, so views are reproducible from
    ``seed``; ranks should use different seeds."""

    def __init__(self, views: Sequence[ViewSpec], mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, out_dtype: torch.dtype = torch.float32, cpu_chunk: int = 64,
                 engine: str = "torch"):
        """``engine``: torch (CPU batches, sample by sample), numba (CPU batches: one compiled pass per sample and
        view, ``augment_numba.py``; needs numba) or auto (numba for CPU batches when importable)."""
        if engine not in ("torch", "numba", "auto", "batched"):
            raise ValueError(f"augment engine {engine!r}: choose torch, numba, batched or auto")
        self.engine = engine
        if engine != "torch":
            try:
                from . import augment_numba
                self._numba = augment_numba
            except ImportError:
                if engine == "numba":
                    raise
                self._numba = None
        self.views = tuple(views)
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.inv_std = 1.0 / torch.tensor(std, dtype=torch.float32)
        self._rows: dict = {}  # (device, width) -> normalize's (scale, shift) rows there
        self.out_dtype = out_dtype
        self.planner = Planner(seed)
        self.cpu_chunk = cpu_chunk

    def reseed(self, seed: int) -> None:
        self.planner.reseed(seed)

    def plan(self, b: int, h: int, w: int, spec: ViewSpec) -> ViewPlan:
        """Every random draw of one view of a (b, h, w) batch (``views.Planner.plan``)."""
        return self.planner.plan(b, h, w, spec)

    def __call__(self, images: torch.Tensor, alloc=torch.empty, num_views: int | None = None) -> list[torch.Tensor]:
        """The views of a batch: all, or the first ``num_views`` (1: the weak view alone: the same
        weak view as with every view made, where the batch is one chunk: on a GPU, or at most
        ``cpu_chunk`` samples on a CPU). ``alloc(shape, dtype=, device=)`` makes the output buffers
        (a DataLoader worker passes one that allocates shared memory, so results cross processes
        without a copy)."""
        views = self.views[:num_views]
        x = to_nhwc(images)
        if self.engine == "batched" or x.device.type != "cpu":
            return self._batched(x, views, alloc)
        b = x.shape[0]
        # On CPU, a chunk of samples goes through every step while it is still in cache: whole-
        # batch passes over 38 MB float tensors are memory-bound (measured ~2x slower).
        step = self.cpu_chunk if x.device.type == "cpu" else b
        sizes = {v.size for v in views}
        if len(sizes) == 1:  # one buffer for all views: one allocation (a shared-memory file) per batch
            s = sizes.pop()
            outs = list(alloc((len(views), b, s, s, x.shape[-1]), dtype=self.out_dtype, device=x.device))
        else:
            outs = [alloc((b, v.size, v.size, x.shape[-1]), dtype=self.out_dtype, device=x.device) for v in views]
        fast = (self.engine != "torch" and self._numba is not None and x.device.type == "cpu"
                and self.out_dtype == torch.float32)
        if fast:
            c = x.shape[-1]
            scale = self.inv_std[:c].contiguous()
            shift = (-self.mean * self.inv_std)[:c].contiguous()
        for i in range(0, b, step):
            for spec, out in zip(views, outs):
                chunk = x[i:i + step]
                if fast:
                    plan = self.plan(*chunk.shape[:3], spec)
                    self._numba.make_view(chunk, spec, plan, scale, shift, out[i:i + step])
                else:
                    self.normalize(self.view_uint8(chunk, spec), out=out[i:i + step])
        return [o.permute(0, 3, 1, 2) for o in outs]

    def view_uint8(self, x: torch.Tensor, spec: ViewSpec, plan: "ViewPlan | None" = None) -> torch.Tensor:
        """One view of a (B,H,W,C) uint8 batch, before normalisation."""
        b, h, w, _ = x.shape
        dev = x.device
        p = plan or self.plan(b, h, w, spec)
        if spec.crop == "rrc":  # colour ops work in place: never on the caller's batch
            out = x.clone() if spec.randaugment else x
        else:
            flip = p.flip.to(dev) if p.flip is not None and spec.crop == "random" else None
            out = crop_flip(x, p.top.to(dev), p.left.to(dev), spec.size, flip)
        if spec.randaugment:
            out = self._randaugment(out, spec, p)
        elif p.inv is not None:
            out = warp_nearest(out, p.inv.to(dev), spec.size)
        if spec.cutout > 0:
            out = cutout(out, spec, p.cy.to(dev), p.cx.to(dev))
        return out

    def _randaugment(self, x: torch.Tensor, spec: ViewSpec, p: "ViewPlan") -> torch.Tensor:
        """Colour ops in step order on the samples that drew them, then one resampling through
        the composed geometry (rrc: every sample; else only samples that drew a geometric op)."""
        for step in range(spec.num_ops):
            for k, op in enumerate(OPS):
                if op == "identity" or op in GEOMETRIC:
                    continue
                rows = torch.nonzero(p.ops[:, step] == k).flatten()
                if rows.numel():
                    r = rows.to(x.device)
                    put_rows(x, r, COLOUR_FNS[op](take_rows(x, r), p.values[rows, step].to(x.device)))
        if p.inv is None:
            return x
        if spec.crop == "rrc":
            return warp_nearest(x, p.inv.to(x.device), spec.size)
        moved = torch.nonzero(p.moved).flatten()
        if moved.numel():
            r = moved.to(x.device)
            put_rows(x, r, warp_nearest(take_rows(x, r), p.inv[moved].to(x.device), spec.size))
        return x

    def normalize(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B,H,W,C) uint8 -> (x - mean) / std as float (B,H,W,C), written into ``out`` if given."""
        b, h, w, c = x.shape
        # Broadcasting (C,) over an innermost dim of 3 defeats vectorisation; a full-row (W*C,)
        # scale and shift keeps both operands contiguous (~2x faster on CPU, measured).
        scale, shift = self._affine_rows(x.device, w)
        if out is None:
            out = torch.empty(x.shape, dtype=self.out_dtype, device=x.device)
        flat = out.view(b * h, w * c)
        # A uint8 * float multiply takes the slow type-promotion path (~10x slower than a
        # converting copy followed by a same-dtype multiply-add, measured).
        flat.copy_(x.reshape(b * h, w * c))
        torch.addcmul(shift, flat, scale, out=flat)
        return out

    def _affine_rows(self, device: torch.device, w: int) -> torch.Tensor:
        """(scale, shift) of ``normalize`` as full (W*C,) rows on ``device``: built once per device
        and width and kept, so a GPU view costs no host-to-device copy (a pageable ``.to`` per view
        would make the host wait for the stream, six times per three-view batch)."""
        key = (device, w)
        rows = self._rows.get(key)
        if rows is None:
            host = torch.stack([self.inv_std.repeat(w), (-self.mean * self.inv_std).repeat(w)])
            rows = self._rows[key] = upload(host, device)
        return rows

    def _batched(self, x: torch.Tensor, views, alloc) -> list[torch.Tensor]:
        """The batched engine (every non-CPU batch; ``engine="batched"`` on a CPU): the batch's
        plans are drawn on the host, packed and uploaded in one (pinned, non-blocking) copy, and
        each view is made by the same ops whatever the batch size and the ops drawn (no host
        sync, no per-sample work); normalised in fp32, returned in ``out_dtype``."""
        b, h, w, c = x.shape
        plans = [self.plan(b, h, w, spec) for spec in views]
        packed = upload(torch.cat([pack_plan(p, spec) for p, spec in zip(plans, views)], 1), x.device)
        outs, col = [], 0
        for spec in views:
            width = plan_width(spec)
            u8 = batched_view(x, spec, unpack_plan(packed[:, col:col + width], spec))
            col += width
            out = alloc((b, spec.size, spec.size, c), dtype=self.out_dtype, device=x.device)
            if self.out_dtype == torch.float32:
                self.normalize(u8, out=out)
            else:  # normalised in fp32, rounded once
                out.copy_(self.normalize(u8, out=torch.empty(u8.shape, device=x.device)))
            outs.append(out.permute(0, 3, 1, 2))
        return outs


# ---------------------------------------------------------------- the batched engine

def plan_width(spec: ViewSpec) -> int:
    """Columns of a packed plan: flip, top, left, the 3x3 inverse map, ops, values, cy, cx."""
    return 12 + 2 * (spec.num_ops if spec.randaugment else 0) + 2


def pack_plan(p: ViewPlan, spec: ViewSpec) -> torch.Tensor:
    """A view's plan as (B, plan_width) float64 (every field exact in float64), on the host."""
    b = (p.flip if p.flip is not None else p.top if p.top is not None else p.base).shape[0]
    zero = torch.zeros(b, 1, dtype=torch.float64)
    cols = [p.flip.double()[:, None] if p.flip is not None else zero,
            p.top.double()[:, None] if p.top is not None else zero,
            p.left.double()[:, None] if p.left is not None else zero,
            (p.inv if p.inv is not None else torch.eye(3, dtype=torch.float64).expand(b, 3, 3)).reshape(b, 9)]
    if spec.randaugment:
        cols += [p.ops.double(), p.values]
    cols += [p.cy.double()[:, None] if p.cy is not None else zero, p.cx.double()[:, None] if p.cx is not None else zero]
    return torch.cat(cols, 1)


def unpack_plan(t: torch.Tensor, spec: ViewSpec) -> dict:
    """``pack_plan``'s columns, on the device, as the batched engine reads them."""
    k = spec.num_ops if spec.randaugment else 0
    return {"flip": t[:, 0] > 0, "top": t[:, 1].long(), "left": t[:, 2].long(), "inv": t[:, 3:12].reshape(-1, 3, 3),
            "ops": t[:, 12:12 + k].long(), "values": t[:, 12 + k:12 + 2 * k],
            "cy": t[:, 12 + 2 * k].long(), "cx": t[:, 13 + 2 * k].long()}


def batched_view(x: torch.Tensor, spec: ViewSpec, p: dict) -> torch.Tensor:
    """One view of a (B,H,W,C) uint8 batch from its unpacked plan, batch-wide: the same values as
    the per-sample engines (identity factors and maps for samples that did not draw an op)."""
    if spec.crop == "rrc":
        out = x
    else:
        flip = p["flip"] if spec.flip and spec.crop == "random" else None
        out = crop_flip(x, p["top"], p["left"], spec.size, flip, batched=True)
    if spec.randaugment:
        for step in range(spec.num_ops):
            out = colour_step(out, p["ops"][:, step], p["values"][:, step])
    if spec.randaugment or spec.crop == "rrc":  # identity maps leave a sample as it is
        out = warp_nearest(out, p["inv"], spec.size)
    if spec.cutout > 0:
        out = cutout(out, spec, p["cy"], p["cx"])
    return out


_CODE = {op: k for k, op in enumerate(OPS)}


def _point_luts(x: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample, per-channel 256-entry tables (n, c, 256) of the point ops, each as its torch
    twin computes it (same dtypes, same order of operations), for every sample."""
    n, h, w, c = x.shape
    dev = x.device
    ar = torch.arange(256, device=dev)
    luts = {}
    scale, offset = _autocontrast_map(x)
    luts["autocontrast"] = (ar.double() * scale[..., None] + offset[..., None]).floor_().clamp_(0, 255)
    luts["equalize"] = _equalize_lut(x)[0].view(n, c, 256)
    t = v.ceil().clamp(0, 255).to(torch.uint8).view(n, 1, 1)
    a8 = ar.to(torch.uint8).view(1, 1, 256)
    luts["solarize"] = (a8 ^ (a8 >= t).to(torch.uint8).mul_(255)).expand(n, c, 256)
    bits = torch.where(v == v.clamp(1, 8), v, 8.0).long()  # other ops' values: any safe shift
    luts["posterize"] = (a8 & ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8).view(n, 1, 1)).expand(n, c, 256)
    f = v.float().view(n, 1, 1)
    luts["brightness"] = (ar.float().view(1, 1, 256) * f).clamp_(0, 255).expand(n, c, 256)
    mean = (_gray(x).mean((1, 2, 3)) + 0.5).floor().view(n, 1, 1)
    luts["contrast"] = ((ar.float().view(1, 1, 256) - mean).mul_(f).add_(mean)).clamp_(0, 255).expand(n, c, 256)
    return luts


def colour_step(x: torch.Tensor, ops: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One RandAugment step's colour ops for every sample at once: a per-sample table lookup for
    the point ops, then color and sharpness with factor 1 (the identity) where not drawn."""
    n, h, w, c = x.shape
    lut = torch.arange(256, device=x.device).expand(n, c, 256).to(torch.uint8)
    for name, table in _point_luts(x, values).items():
        lut = torch.where((ops == _CODE[name]).view(n, 1, 1), table.to(torch.uint8), lut)
    base = (torch.arange(n * c, device=x.device, dtype=torch.int32) * 256).view(n, 1, 1, c)
    out = lut.reshape(-1).index_select(0, (x.int() + base).view(-1)).view(x.shape)
    if c == 3:
        out = _blend(_gray(out), out, torch.where(ops == _CODE["color"], values, 1.0))
    return sharpness(out, torch.where(ops == _CODE["sharpness"], values, 1.0))
