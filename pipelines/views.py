"""The view plan, shared by both augmentation engines (``augment.py``: torch, any device;
``augment_numba.py``: CPU): the ops and their magnitudes, a view declared as data (``ViewSpec``),
and every random draw of one view of a batch (``ViewPlan``, made by ``draw_plan``) before any
pixel is touched, so the two engines apply the same plan."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
       "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
GEOMETRIC = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
NUM_BINS = 31


@dataclass(frozen=True)
class ViewSpec:
    """One view, declared as data."""

    size: int
    """Output side in pixels (square views)."""
    crop: str = "random"
    """``random``: a random size x size window of the input, with ``pad`` pixels of zero
    padding around it first (pad-and-crop for 32 px data); ``rrc``: random-resized crop
    (scale ``rrc_scale``, aspect 3/4..4/3, nearest resampling); ``center``: the central window."""
    pad: int = 0
    flip: bool = True
    """Horizontal flip with probability 0.5."""
    randaugment: bool = False
    num_ops: int = 2
    magnitude: int = 9
    """RandAugment magnitude bin, 0..30 (torchvision's scale)."""
    cutout: float = 0.0
    """Side of a grey square cut out of the view, as a fraction of ``size``; 0 turns it off."""
    rrc_scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self):
        if self.crop not in ("random", "rrc", "center"):
            raise ValueError(f"view crop {self.crop!r}: choose random, rrc or center")
        if not 0 <= self.magnitude < NUM_BINS:
            raise ValueError(f"RandAugment magnitude {self.magnitude}: choose 0..{NUM_BINS - 1}")


def lacol_views(size: int, pad: int = 0, magnitude: int = 9, num_ops: int = 2, crop: str = "random",
                flip: bool = True, cutout: float = 0.0) -> tuple[ViewSpec, ViewSpec, ViewSpec]:
    """The three LaCoL views: weak (crop + flip) and two strong (the same + RandAugment)."""
    weak = ViewSpec(size, crop, pad, flip)
    strong = replace(weak, randaugment=True, num_ops=num_ops, magnitude=magnitude, cutout=cutout)
    return weak, strong, strong


def eval_view(size: int) -> ViewSpec:
    return ViewSpec(size, crop="center", flip=False)

def magnitude(op: str, m: int, size: int) -> float:
    """torchvision RandAugment's value for bin m of 31 (unsigned)."""
    frac = m / (NUM_BINS - 1)
    if op in ("shear_x", "shear_y"):
        return 0.3 * frac
    if op in ("translate_x", "translate_y"):
        return float(int(150.0 / 331.0 * size * frac))
    if op == "rotate":
        return 30.0 * frac
    if op in ("brightness", "color", "contrast", "sharpness"):
        return 0.9 * frac
    if op == "posterize":
        return float(8 - int(round(4 * frac)))
    if op == "solarize":
        return 255.0 * (1 - frac)
    return 0.0


SIGNED = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y",
                    "brightness", "color", "contrast", "sharpness"})


# ---------------------------------------------------------------- geometry: inverse affine maps

def op_matrix(op: str, v: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, 3) maps from output pixel-centre coordinates to input coordinates, as the data tuple
    of PIL's Image.transform(AFFINE) (and Image.rotate's, about the centre)."""
    n = v.shape[0]
    m = torch.eye(3, dtype=torch.float64, device=v.device).repeat(n, 1, 1)
    v = v.double()
    if op == "shear_x":
        m[:, 0, 1] = v
    elif op == "shear_y":
        m[:, 1, 0] = v
    elif op == "translate_x":
        m[:, 0, 2] = v
    elif op == "translate_y":
        m[:, 1, 2] = v
    elif op == "rotate":
        a = -torch.deg2rad(v)
        cos, sin = torch.cos(a), torch.sin(a)
        c = size / 2.0
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, sin, -sin, cos
        m[:, 0, 2] = c - cos * c - sin * c
        m[:, 1, 2] = c + sin * c - cos * c
    return m

def op_values(ops: torch.Tensor, sign: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """(B, num_ops) float64 argument of each drawn op: signed magnitude; 1 + v for the enhancers
    (float64, as PIL forms 1 + v in double before its C code rounds it to float)."""
    table = torch.tensor([magnitude(op, spec.magnitude, spec.size) for op in OPS], dtype=torch.float64)
    signed = torch.tensor([op in SIGNED for op in OPS])
    enhance = torch.tensor([op in ("brightness", "color", "contrast", "sharpness") for op in OPS])
    v = table[ops] * torch.where(signed[ops], sign.double(), 1.0)
    return torch.where(enhance[ops], 1.0 + v, v)


def compose_geometry(ops, values, spec: ViewSpec, base: torch.Tensor | None) -> torch.Tensor | None:
    """(B, 3, 3) float64 inverse map of a view's geometry: the rrc crop (``base``) composed with
    its geometric RandAugment ops in step order; None when the view has neither."""
    if ops is None:
        return base
    geo = [k for k, op in enumerate(OPS) if op in GEOMETRIC]
    if base is None and not bool(torch.isin(ops, torch.tensor(geo)).any()):
        return None
    inv = base.clone() if base is not None else torch.eye(3, dtype=torch.float64).repeat(ops.shape[0], 1, 1)
    for step in range(ops.shape[1]):
        for k in geo:
            rows = torch.nonzero(ops[:, step] == k).flatten()
            if rows.numel():
                inv[rows] = inv[rows] @ op_matrix(OPS[k], values[rows, step], spec.size)
    return inv


@dataclass
class ViewPlan:
    """The random draws of one view of a batch (``Augmenter.plan``); None where not drawn."""

    flip: torch.Tensor | None
    """(B,) bool: flip horizontally (folded into ``base`` for rrc)."""
    top: torch.Tensor | None
    """(B,) int64 window corner (random and center crops; may be negative with padding)."""
    left: torch.Tensor | None
    base: torch.Tensor | None
    """(B, 3, 3) float64 rrc inverse map."""
    ops: torch.Tensor | None
    """(B, num_ops) int64 index into OPS."""
    values: torch.Tensor | None
    """(B, num_ops) float64 op arguments (``op_values``)."""
    inv: torch.Tensor | None
    """(B, 3, 3) float64 all geometry composed (``compose_geometry``)."""
    cy: torch.Tensor | None
    """(B,) int64 cutout centre."""
    cx: torch.Tensor | None

    @property
    def moved(self) -> torch.Tensor:
        """(B,) bool: samples whose composed geometry is not the identity."""
        return (self.inv - torch.eye(3, dtype=torch.float64)).abs().amax((1, 2)) > 0


class Planner:
    """Draws ``ViewPlan``s from one generator, in one fixed order per view (so a seed gives the
    same plan wherever the pixels are then made)."""

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen)

    def _int(self, high, shape) -> torch.Tensor:
        """Uniform integers in [0, high) for a (B,) tensor or int ``high``."""
        return (self._rand(*shape) * torch.as_tensor(high, dtype=torch.float32)).long()

    def plan(self, b: int, h: int, w: int, spec: ViewSpec) -> ViewPlan:
        """Every random draw of one view of a (b, h, w) batch, in one fixed order, before any
        pixel is touched: the torch and the numba engines apply the same plan."""
        flip = (self._rand(b) < 0.5) if spec.flip else None
        top = left = base = None
        if spec.crop == "center":
            top = torch.full((b,), (h - spec.size) // 2)
            left = torch.full((b,), (w - spec.size) // 2)
        elif spec.crop == "random":
            top = self._int(h + 2 * spec.pad - spec.size + 1, (b,)) - spec.pad
            left = self._int(w + 2 * spec.pad - spec.size + 1, (b,)) - spec.pad
        else:  # rrc: the crop is an affine map, composed with RandAugment's geometry
            base = self._rrc_matrix(b, h, w, spec, flip)
        ops = values = None
        if spec.randaugment:
            ops = self._int(len(OPS), (b, spec.num_ops))
            sign = torch.where(self._rand(b, spec.num_ops) < 0.5, -1.0, 1.0)
            values = op_values(ops, sign, spec)
        cy = cx = None
        if spec.cutout > 0:
            cy, cx = self._int(spec.size, (b,)), self._int(spec.size, (b,))
        return ViewPlan(flip, top, left, base, ops, values, compose_geometry(ops, values, spec, base), cy, cx)

    def _rrc_matrix(self, b, h, w, spec: ViewSpec, flip) -> torch.Tensor:
        area = h * w * (spec.rrc_scale[0] + self._rand(b) * (spec.rrc_scale[1] - spec.rrc_scale[0]))
        logr = math.log(3 / 4) + self._rand(b) * (math.log(4 / 3) - math.log(3 / 4))
        area, logr = area.double(), logr.double()
        cw = torch.sqrt(area * torch.exp(logr)).clamp(1, w)
        ch = torch.sqrt(area / torch.exp(logr)).clamp(1, h)
        x0 = self._rand(b).double() * (w - cw)
        y0 = self._rand(b).double() * (h - ch)
        m = torch.zeros(b, 3, 3, dtype=torch.float64)
        sx, sy = cw / spec.size, ch / spec.size
        m[:, 0, 0], m[:, 0, 2] = sx, x0
        m[:, 1, 1], m[:, 1, 2] = sy, y0
        if flip is not None:
            m[flip, 0, 0] = -sx[flip]
            m[flip, 0, 2] = (x0 + cw)[flip]
        m[:, 2, 2] = 1
        return m
