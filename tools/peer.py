"""The peer pipeline: PIL + per-image transforms in DataLoader workers, as DivideMix-style code
loads Clothing1M (Resize(256), RandomCrop(224), RandomHorizontalFlip, ToTensor, Normalize), with
torchvision's RandAugment (n ops, magnitude bin m of 31, nearest, fill 0) written per image in PIL.

Two uses: the baseline that ``lacol-bench loader`` measures ours against, and the independent
per-image reference (``pil_op``) that the tests check each batched op of pipelines/augment.py against.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from pipelines.views import OPS, SIGNED, magnitude


def pil_op(img: Image.Image, op: str, v: float) -> Image.Image:
    """One RandAugment op on a PIL image. ``v`` is the signed magnitude (factor - 1 for the
    enhancers, degrees for rotate, pixels for translate, shear factor, bits, threshold)."""
    fill = 0 if img.mode == "L" else (0,) * len(img.getbands())
    aff = {"shear_x": (1, v, 0, 0, 1, 0), "shear_y": (1, 0, 0, v, 1, 0),
           "translate_x": (1, 0, v, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, v)}
    if op == "identity":
        return img
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "rotate":
        return img.rotate(v, resample=Image.NEAREST, fillcolor=fill)
    if op == "solarize":
        return ImageOps.solarize(img, v)
    if op == "posterize":
        return ImageOps.posterize(img, int(v))
    if op in aff:
        return img.transform(img.size, Image.AFFINE, aff[op], resample=Image.NEAREST, fillcolor=fill)
    enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[op]
    return enhancer(img).enhance(1.0 + v)


class PilRandAugment:
    """torchvision.transforms.RandAugment semantics, per image."""

    def __init__(self, num_ops: int = 2, magnitude_bin: int = 9):
        self.num_ops, self.m = num_ops, magnitude_bin

    def __call__(self, img: Image.Image) -> Image.Image:
        for _ in range(self.num_ops):
            op = random.choice(OPS)
            v = magnitude(op, self.m, img.size[0])
            if op in SIGNED and random.random() < 0.5:
                v = -v
            img = pil_op(img, op, v)
        return img


class PeerViews(torch.utils.data.Dataset):
    """Per-image three views (weak, strong, strong) from image files, all work done per image."""

    def __init__(self, paths, labels, mean, std, size: int = 224, resize: int = 256):
        self.paths, self.labels = list(paths), np.asarray(labels)
        self.mean = torch.tensor(mean).view(3, 1, 1) / 255.0
        self.std = torch.tensor(std).view(3, 1, 1) / 255.0
        self.size, self.resize = size, resize
        self.ra = PilRandAugment()

    def __len__(self) -> int:
        return len(self.paths)

    def _resize(self, img: Image.Image) -> Image.Image:  # torchvision Resize(256): shorter side
        w, h = img.size
        if w <= h:
            return img.resize((self.resize, int(self.resize * h / w)), Image.BILINEAR)
        return img.resize((int(self.resize * w / h), self.resize), Image.BILINEAR)

    def _weak(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        top, left = random.randint(0, h - self.size), random.randint(0, w - self.size)
        img = img.crop((left, top, left + self.size, top + self.size))
        return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < 0.5 else img

    def _tensor(self, img: Image.Image) -> torch.Tensor:  # ToTensor + Normalize
        t = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
        return t.sub_(self.mean).div_(self.std)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as f:
            img = self._resize(f.convert("RGB"))
        weak = self._tensor(self._weak(img))
        strong = self._tensor(self.ra(self._weak(img)))
        strong2 = self._tensor(self.ra(self._weak(img)))
        return weak, strong, strong2, int(self.labels[i]), i


def _seed_worker(worker_id: int) -> None:
    random.seed(torch.initial_seed() % 2**32)


def peer_loader(split, batch_size: int = 64, num_workers: int = 2) -> torch.utils.data.DataLoader:
    ds = PeerViews([split.path(i) for i in range(len(split))], split.labels, split.mean, split.std)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=num_workers, worker_init_fn=_seed_worker,
                                       prefetch_factor=4)
