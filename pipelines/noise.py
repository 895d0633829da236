"""Synthetic label noise and CIFAR-N human labels: seeded, deterministic, saved beside the run.

Kinds:
- ``symmetric``: exactly round(rate * N) samples, drawn uniformly, get a label drawn uniformly from
  the *other* C-1 classes, so the realised noise rate equals ``rate``. (Some peers, e.g. the
  Co-teaching code, draw from all C classes, true one included; their realised rate is
  rate * (C-1) / C. Compare numbers with that in mind.)
- ``symmetric_any``: the common code's variant (DivideMix, Co-teaching): round(rate * N) samples
  get a label drawn uniformly from all C classes, the true one included, so the realised rate is
  about rate * (C-1) / C.
- ``asymmetric``: class-dependent flips between look-alike classes; in each mapped class exactly
  round(rate * N_c) samples flip to the class's target (the maps are in the datasets'
  entries, ``sources.DATASETS``).
- ``asymmetric_cdr``: the same with CDR's Fashion-MNIST map (Xia et al., ICLR 2021: T-shirt->Shirt,
  Pullover->Coat, Sandal<->Sneaker), the one Fashion-MNIST papers of the field compare on.
- ``instance``: the PTD procedure of Xia et al. (NeurIPS 2020): per-sample flip rate q_i from a
  normal around ``rate`` with std 0.1 truncated to [0, 1]; W ~ N(0, 1) of shape (C, D, C) over the
  flattened raw 0-255 image x_i; flip distribution q_i * softmax(x_i W[y_i]) over the other classes.
- ``cifar10n:<key>`` / ``cifar100n:<key>``: human labels from the CIFAR-N release files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fileio import atomic_npz
from .safe_pickle import UnsafePickle, load_file
from .sources.base import DatasetError

KINDS = ("symmetric", "symmetric_any", "asymmetric", "asymmetric_cdr", "instance", "cifar-n")



def _check_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate {rate}: must be in [0, 1)")


def symmetric(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Flip exactly round(rate * N) labels, each to a uniformly drawn other class."""
    _check_rate(rate)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flip = rng.permutation(len(labels))[: round(rate * len(labels))]
    shift = rng.integers(1, num_classes, size=len(flip))  # 1..C-1: never the true class
    noisy[flip] = (labels[flip] + shift) % num_classes
    return noisy


def symmetric_any(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """round(rate * N) samples get a uniformly drawn class of all C (the true one included)."""
    _check_rate(rate)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flip = rng.permutation(len(labels))[: round(rate * len(labels))]
    noisy[flip] = rng.integers(0, num_classes, size=len(flip))
    return noisy


def asymmetric_map(dataset: str, num_classes: int, fine_to_coarse: np.ndarray | None = None,
                   kind: str = "asymmetric") -> np.ndarray:
    """target[c] = class that c flips to, or -1 where c keeps its label: the map of ``kind`` in
    the dataset's entry (``sources.DATASETS``; CIFAR-100's is made from the fine->coarse map the
    data carries)."""
    from .sources import DATASETS

    maps = {name: info.asymmetric[kind] for name, info in DATASETS.items() if kind in info.asymmetric}
    if dataset not in maps:
        raise DatasetError(f"data.noise={kind}: no map for {dataset!r} (have {', '.join(sorted(maps))})")
    mapping = maps[dataset]
    if callable(mapping):
        if fine_to_coarse is None:
            raise DatasetError(f"{dataset} {kind} noise needs the fine->coarse map of the data")
        mapping = mapping(fine_to_coarse)
    target = np.full(num_classes, -1, dtype=np.int64)
    for a, b in mapping.items():
        target[a] = b
    return target


def asymmetric(labels: np.ndarray, rate: float, target: np.ndarray, seed: int) -> np.ndarray:
    """In each class c with target[c] >= 0, flip exactly round(rate * N_c) samples to target[c]."""
    _check_rate(rate)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for c in np.flatnonzero(target >= 0):
        members = np.flatnonzero(labels == c)
        flip = rng.permutation(members)[: round(rate * len(members))]
        noisy[flip] = target[c]
    return noisy


def _truncated_normal(rng: np.random.Generator, mean: float, std: float, n: int) -> np.ndarray:
    """n draws of N(mean, std) truncated to [0, 1], by rejection (exact, and cheap near 0.5)."""
    out = np.empty(0)
    while out.size < n:
        x = rng.normal(mean, std, size=2 * (n - out.size) + 16)
        out = np.concatenate([out, x[(x >= 0) & (x <= 1)]])
    return out[:n]


def instance(labels: np.ndarray, images: np.ndarray, rate: float, num_classes: int, seed: int,
             std: float = 0.1) -> np.ndarray:
    """PTD instance-dependent noise (Xia et al. 2020) over raw 0-255 pixels; W is (C, D, C)."""
    _check_rate(rate)
    rng = np.random.default_rng(seed)
    n = len(labels)
    x = images.reshape(n, -1).astype(np.float64)
    q = _truncated_normal(rng, rate, std, n)
    w = rng.standard_normal((num_classes, x.shape[1], num_classes))
    logits = np.empty((n, num_classes))
    for c in range(num_classes):
        rows = labels == c
        logits[rows] = x[rows] @ w[c]
    logits[np.arange(n), labels] = -np.inf
    p = np.exp(logits - logits.max(1, keepdims=True))
    p *= (q / p.sum(1))[:, None]
    p[np.arange(n), labels] = 1.0 - q
    u = rng.random(n)[:, None]
    noisy = (np.cumsum(p, 1) < u).sum(1)
    return np.minimum(noisy, num_classes - 1).astype(np.int64)


def load_cifar_n(path: str | Path, key: str, n: int) -> np.ndarray:
    """Human labels from ``CIFAR-10_human.pt`` (aggre_label, worse_label, random_label1..3) or
    ``CIFAR-100_human.pt`` (noisy_label), as released by CIFAR-N (a dict of arrays)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"CIFAR-N: no file {path}. Get CIFAR-10_human.pt / CIFAR-100_human.pt from the CIFAR-N release.")
    # The release is a pickled dict of numpy arrays: read by a restricted unpickler that builds
    # arrays and plain data only (torch.load's weights-only mode refuses numpy arrays)
    try:
        d = load_file(path)
    except UnsafePickle as e:
        raise DatasetError(f"CIFAR-N: {path} is not a CIFAR-N label file: {e}") from e
    except Exception as e:
        raise DatasetError(f"CIFAR-N: cannot read {path}: {e}") from e
    if not isinstance(d, dict):
        raise DatasetError(f"CIFAR-N: {path} holds a {type(d).__name__}, not a dict of label arrays")
    if key not in d:
        raise DatasetError(f"CIFAR-N: {path} has no key {key!r}; it has {sorted(d)}")
    labels = np.asarray(d[key], dtype=np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise DatasetError(f"CIFAR-N: {path}[{key!r}] has {labels.shape[0]} labels, the train split {n}")
    return labels


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised T[i, j] = P(noisy = j | clean = i) over samples with a known clean label."""
    known = clean >= 0
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean[known], noisy[known]), 1)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


@dataclass
class NoisyLabels:
    """Noisy labels with their provenance; saved as .npz and loaded back unchanged."""

    labels: np.ndarray
    clean: np.ndarray
    kind: str
    rate: float
    seed: int
    dataset: str

    @property
    def realised_rate(self) -> float:
        known = self.clean >= 0
        return float((self.labels[known] != self.clean[known]).mean()) if known.any() else float("nan")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_npz(path, labels=self.labels, clean=self.clean, kind=self.kind, rate=self.rate, seed=self.seed,
                   dataset=self.dataset)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NoisyLabels":
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"no label-noise file {path}; make one with lacol-noise")
        with np.load(path) as z:
            missing = {"labels", "clean", "kind", "rate", "seed", "dataset"} - set(z.files)
            if missing:
                raise DatasetError(f"{path}: not a lacol-noise file (missing {sorted(missing)})")
            return cls(z["labels"].astype(np.int64), z["clean"].astype(np.int64), str(z["kind"]),
                       float(z["rate"]), int(z["seed"]), str(z["dataset"]))


def make_noise(split, dataset: str, kind: str, rate: float, seed: int = 0,
               cifar_n_file: str | Path | None = None) -> NoisyLabels:
    """Noisy labels for a Split (whose ``labels`` are clean). ``kind`` is one of KINDS;
    for cifar-n, ``cifar_n_file`` is the release file and the key goes in ``kind`` as cifar-n:KEY."""
    # the labels noise is drawn from: the clean ones; where unknown (a user's own data), the given
    # ones, which synthetic noise then treats as the truth
    clean, c = np.where(split.clean_labels >= 0, split.clean_labels, split.labels), split.num_classes
    if kind == "symmetric":
        labels = symmetric(clean, rate, c, seed)
    elif kind == "symmetric_any":
        labels = symmetric_any(clean, rate, c, seed)
    elif kind in ("asymmetric", "asymmetric_cdr"):
        labels = asymmetric(clean, rate, asymmetric_map(dataset, c, split.extra.get("fine_to_coarse"), kind), seed)
    elif kind == "instance":
        if split.images is None:
            raise DatasetError("instance noise needs in-memory images (Fashion-MNIST, CIFAR)")
        labels = instance(clean, split.images, rate, c, seed)
    elif kind.startswith("cifar-n"):
        from .sources import DATASETS

        keys = DATASETS[dataset].cifar_n if dataset in DATASETS else ()
        key = kind.partition(":")[2] or (keys or ("",))[0]
        if key not in keys:
            raise DatasetError(f"cifar-n keys for {dataset!r}: {keys}")
        if cifar_n_file is None:
            raise DatasetError("cifar-n noise needs the release file (--cifar-n-file CIFAR-10_human.pt)")
        labels, rate = load_cifar_n(cifar_n_file, key, len(clean)), float("nan")
        kind = f"cifar-n:{key}"
    else:
        raise DatasetError(f"noise kind {kind!r}: choose one of {', '.join(KINDS)} (cifar-n as cifar-n:KEY)")
    return NoisyLabels(labels, clean.copy(), kind, rate, seed, dataset)


def report(noise: NoisyLabels, classes, console=None) -> None:
    """Print the realised rate and the transition matrix (rich table)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = transition_matrix(noise.clean, noise.labels, len(classes))
    table = Table(title=f"{noise.dataset} {noise.kind} noise, requested {noise.rate:.3f}, "
                        f"realised {noise.realised_rate:.4f} (seed {noise.seed}); "
                        f"rows: clean class, columns: noisy label, % of the row")
    table.add_column("clean \\ noisy", no_wrap=True, max_width=14)
    for j in range(len(classes)):
        table.add_column(str(j), justify="right", no_wrap=True, min_width=3)
    for i, name in enumerate(classes):
        table.add_row(f"{i} {name}"[:14], *(f"{100 * v:.0f}" if v else "." for v in t[i]))
    console.print(table)
