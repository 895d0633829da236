"""The CPU engine of ``augment.py``: one compiled pass per view and sample (numba, parallel over
samples), applying the same ``ViewPlan`` as the torch engine with the same arithmetic.

Why: on a CPU, the torch engine spends most of its time in whole-tensor passes over subsets
(gathers, float blends, int64 index tensors) and in allocation; here each sample's view is made in
a few small buffers that stay in cache, from the crop to the normalised float output.
Exactness: every op mirrors its torch twin (float32 blends, float64 autocontrast, integer
equalize, PIL's nearest-neighbour convention for the geometry); ``tests/test_augment.py`` checks
the two engines against each other.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

from .views import OPS, ViewPlan, ViewSpec

_CODE = {op: i for i, op in enumerate(OPS)}
_F0, _F05, _F13, _F65, _F255 = (np.float32(v) for v in (0.0, 0.5, 13.0, 6.5, 255.0))


@njit(cache=True, inline="always")
def _u8(v):
    """float32 -> uint8 as torch's clamp(0, 255) then truncating cast."""
    return np.uint8(np.int32(min(max(v, _F0), _F255)))


@njit(cache=True)
def _gray(img, y, x):
    c = img.shape[2]
    if c == 1:
        return np.int64(img[y, x, 0])
    return (np.int64(img[y, x, 0]) * 19595 + np.int64(img[y, x, 1]) * 38470
            + np.int64(img[y, x, 2]) * 7471 + 32768) >> 16


@njit(cache=True)
def _blend_flat(flat, d, f):
    for j in range(flat.size):
        flat[j] = _u8((np.float32(flat[j]) - d) * f + d)


@njit(cache=True)
def _colour(img, code, v, scratch):
    """One colour op in place on a (h, w, c) C-contiguous uint8 image; codes as OPS. ``scratch``:
    a flat uint8 buffer of at least img.size (sharpness reads a copy)."""
    h, w, c = img.shape
    flat = img.reshape(-1)
    n = flat.size
    f = np.float32(v)
    if code == 1 or code == 2:  # autocontrast (float64, as PIL) or equalize: a LUT per channel
        lut = np.empty((c, 256), np.uint8)
        hist = np.zeros((c, 256), np.int64)
        for j in range(0, n, c):
            for k in range(c):
                hist[k, flat[j + k]] += 1
        for k in range(c):
            lo, hi, nonzero = 255, 0, 0
            for i in range(256):
                if hist[k, i] > 0:
                    lo, hi, nonzero = min(lo, i), i, nonzero + 1
            for i in range(256):
                lut[k, i] = i
            if code == 1:
                if hi <= lo:
                    continue
                scale = 255.0 / float(hi - lo)
                offset = -float(lo) * scale
                for i in range(256):
                    lut[k, i] = np.uint8(min(max(math.floor(float(i) * scale + offset), 0.0), 255.0))
            else:
                step = (h * w - hist[k, hi]) // 255
                if step == 0 or nonzero <= 1:
                    continue
                acc = step // 2
                for i in range(256):
                    lut[k, i] = min(acc // step, 255)
                    acc += hist[k, i]
        for j in range(0, n, c):
            for k in range(c):
                flat[j + k] = lut[k, flat[j + k]]
    elif code == 4:  # solarize
        t = np.int32(min(max(math.ceil(v), 0.0), 255.0))
        for j in range(n):
            p = np.int32(flat[j])
            flat[j] = np.uint8(255 - p if p >= t else p)
    elif code == 5:  # color
        if c == 3:
            for j in range(0, n, 3):
                d = np.float32((np.int32(flat[j]) * 19595 + np.int32(flat[j + 1]) * 38470
                                + np.int32(flat[j + 2]) * 7471 + 32768) >> 16)
                for k in range(3):
                    flat[j + k] = _u8((np.float32(flat[j + k]) - d) * f + d)
    elif code == 6:  # posterize
        mask = np.uint8((0xFF << (8 - int(v))) & 0xFF)
        for j in range(n):
            flat[j] &= mask
    elif code == 7:  # contrast: blend with the rounded mean gray
        total = 0
        for y in range(h):
            for x in range(w):
                total += _gray(img, y, x)
        mean = np.float32(np.float32(total) / np.float32(h * w))
        _blend_flat(flat, np.float32(math.floor(mean + _F05)), f)
    elif code == 8:  # brightness
        for j in range(n):
            flat[j] = _u8(np.float32(flat[j]) * f)
    elif code == 9:  # sharpness: PIL's SMOOTH filter (1 1 1 / 1 5 1 / 1 1 1, /13, rounded), border kept
        src = scratch[:n]
        src[:] = flat
        row = w * c
        rows3 = np.empty(row, np.uint32)
        for y in range(1, h - 1):
            a, b = (y - 1) * row, y * row
            for j in range(row):
                rows3[j] = np.uint32(src[a + j]) + np.uint32(src[b + j]) + np.uint32(src[b + row + j])
            for j in range(c, row - c):
                s9 = rows3[j - c] + rows3[j] + rows3[j + c] + np.uint32(4) * np.uint32(src[b + j])
                # floor((s + 6.5) / 13) in float32 is exact for these integers: (2s + 13) // 26
                d = np.float32((np.uint32(2) * s9 + np.uint32(13)) // np.uint32(26))
                flat[b + j] = _u8((np.float32(src[b + j]) - d) * f + d)


@njit(cache=True)
def _warp(src, m, size, dst):
    """Nearest resampling through the inverse map m (float32 3x3), fill 0, as warp_nearest."""
    h, w, c = src.shape
    sflat, dflat = src.reshape(-1), dst.reshape(-1)
    m00, m10 = np.float64(m[0, 0]), np.float64(m[1, 0])
    ax = np.empty(size)
    for x in range(size):
        ax[x] = np.float64(np.float32(x) + _F05)
    at = np.empty(size, np.int64)
    for y in range(size):
        ay = np.float32(y) + _F05
        tx = np.float64(m[0, 2] + m[0, 1] * ay)
        ty = np.float64(m[1, 2] + m[1, 1] * ay)
        for x in range(size):  # source offset per output pixel, -1 outside (a vectorisable pass)
            # torch.addcmul fuses the multiply-add (one rounding): exact product in float64
            sx = math.floor(np.float32(tx + m00 * ax[x]))
            sy = math.floor(np.float32(ty + m10 * ax[x]))
            ok = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
            at[x] = (int(sy) * w + int(sx)) * c if ok else -1
        base = y * size * c
        for x in range(size):
            a = at[x]
            for k in range(c):
                dflat[base + x * c + k] = sflat[a + k] if a >= 0 else 0


@njit(cache=True, fastmath={"contract"})
def _crop_rows(src, t, l, flip, size, dst, normalise, srow, shrow):
    """The size x size window of src at (t, l), flipped if ``flip``, outside -> pixel 0; written
    into dst as uint8 (``normalise`` False) or as normalised float32 (True: srow, shrow are the
    per-position scale and shift of one output row, float64)."""
    h, w, c = src.shape
    row = size * c
    sflat, dflat = src.reshape(-1), dst.reshape(-1)
    x0, x1 = max(l, 0), min(l + size, w)  # source columns inside
    tmp = np.empty(row, np.float32)
    for y in range(size):
        yy, base = t + y, y * row
        inside = 0 <= yy < h and x0 < x1
        if not inside or x0 != l or x1 != l + size:  # padding shows in this row
            for j in range(row):
                dflat[base + j] = shrow[j] if normalise else 0
        if not inside:
            continue
        s0 = (yy * w + x0) * c
        count = (x1 - x0) * c
        if not flip:  # one contiguous run: a loop the compiler vectorises
            d0 = base + (x0 - l) * c
            if normalise:  # contracted to one fused multiply-add, as torch's addcmul
                for j in range(count):
                    dflat[d0 + j] = np.float32(sflat[s0 + j]) * srow[j] + shrow[j]
            else:
                for j in range(count):
                    dflat[d0 + j] = sflat[s0 + j]
            continue
        # flipped: the run converted contiguously (vectorised), then its pixels laid down reversed
        d_end = base + (size - (x0 - l)) * c  # one past the last output value of the run
        if normalise:
            for j in range(count):
                tmp[j] = np.float32(sflat[s0 + j]) * srow[j] + shrow[j]
            for p in range(0, count, c):
                for k in range(c):
                    dflat[d_end - c - p + k] = tmp[p + k]
        else:
            for p in range(0, count, c):
                for k in range(c):
                    dflat[d_end - c - p + k] = sflat[s0 + p + k]


@njit(cache=True, parallel=True)
def _views(x, chunks, size, crop_rrc, top, left, flip, ops, values, inv, moved, cut_half, cy, cx, scale, shift, out):
    b, h, w, c = x.shape
    nops = ops.shape[1]
    srow, shrow = np.empty(size * c, np.float32), np.empty(size * c, np.float32)
    for j in range(size * c):
        srow[j], shrow[j] = scale[j % c], shift[j % c]
    side = max(h * w, size * size) * c
    for ch in prange(chunks):
        # scratch buffers once per chunk of samples: a fresh 150 kB array per sample is an
        # mmap/munmap pair with its page faults
        a_buf, b_buf, s_buf = np.empty(side, np.uint8), np.empty(side, np.uint8), np.empty(side, np.uint8)
        for i in range(ch * b // chunks, (ch + 1) * b // chunks):
            if not crop_rrc and nops == 0 and cut_half < 0 and not moved[i]:
                _crop_rows(x[i], top[i], left[i], flip[i], size, out[i], True, srow, shrow)  # one pass
                continue
            if crop_rrc:
                img = a_buf[:h * w * c].reshape(h, w, c)
                img[:] = x[i]
            else:
                img = a_buf[:size * size * c].reshape(size, size, c)
                _crop_rows(x[i], top[i], left[i], flip[i], size, img, False, srow, shrow)
            for s in range(nops):
                code = ops[i, s]
                if code == 0 or code == 3 or code >= 10:  # identity or geometric (composed in inv)
                    continue
                _colour(img, code, values[i, s], s_buf)
            if moved[i]:
                dst = b_buf[:size * size * c].reshape(size, size, c)
                _warp(img, inv[i], size, dst)
                img = dst
            if cut_half >= 0:
                for yy in range(max(cy[i] - cut_half, 0), min(cy[i] + cut_half + 1, size)):
                    for xx in range(max(cx[i] - cut_half, 0), min(cx[i] + cut_half + 1, size)):
                        for k in range(c):
                            img[yy, xx, k] = 127
            _crop_rows(img, 0, 0, False, size, out[i], True, srow, shrow)


def make_view(x: torch.Tensor, spec: ViewSpec, plan: ViewPlan, scale: torch.Tensor, shift: torch.Tensor,
              out: torch.Tensor) -> None:
    """Write the normalised view of the uint8 (B, H, W, C) CPU batch ``x`` into ``out``
    (B, size, size, C) float32, following ``plan``."""
    b = x.shape[0]
    none_i = np.zeros(b, np.int64)
    rrc = spec.crop == "rrc"
    flip = plan.flip.numpy() if plan.flip is not None and spec.crop == "random" else np.zeros(b, bool)
    ops = plan.ops.numpy() if plan.ops is not None else np.zeros((b, 0), np.int64)
    values = plan.values.numpy() if plan.values is not None else np.zeros((b, 0), np.float64)
    if plan.inv is not None:
        inv, moved = plan.inv.float().numpy(), (plan.moved | rrc).numpy()
    else:
        inv, moved = np.zeros((b, 3, 3), np.float32), np.zeros(b, bool)
    cut = max(1, int(spec.cutout * spec.size)) // 2 if spec.cutout > 0 else -1
    # as many threads as torch may use here (train.threads; 1 in a DataLoader worker)
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _views(x.numpy(), max(1, min(b, 4 * numba.get_num_threads())), spec.size, rrc,
           none_i if rrc else plan.top.numpy(), none_i if rrc else plan.left.numpy(), flip, ops, values,
           inv, moved, cut, none_i if plan.cy is None else plan.cy.numpy(),
           none_i if plan.cx is None else plan.cx.numpy(), scale.numpy(), shift.numpy(), out.numpy())
