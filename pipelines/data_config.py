"""The data section's type: what ``make_loader`` and the splits read (``lacol.config`` composes it
as ``data``). Each field is declared once, here, with its docstring: the view options beside the
views they make, and a sub-section per backend (``data.ffcv.*``, ``data.dali.*``) for what only
that backend reads. Validation asks the registries (``DATASETS``, ``BACKENDS``, the noise kinds)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .build import BACKENDS
from .noise import KINDS as NOISE_KINDS
from .sources import DATASETS
from .views import NUM_BINS, OPS, ViewSpec, lacol_views


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what is allowed."""


def choice(key: str, value, allowed) -> None:
    """Refuse ``value`` unless it is one of ``allowed``, naming the key and the choices."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: allowed values are {', '.join(map(repr, allowed))}")


def at_least(low, **values) -> None:
    """Refuse any ``key=value`` (``data.`` keys) below ``low``."""
    for key, v in values.items():
        if v < low:
            raise ConfigError(f"data.{key}={v}: must be >= {low}")


@dataclass
class ViewOptions:
    """The training views (``views``): a weak view and two strong ones with RandAugment."""

    image_size: int = 28
    """Side of the training and evaluation views."""
    pad: int = 4
    """Zero padding before the random crop (pad-and-crop for 28/32 px data)."""
    crop: str = "random"
    """random | rrc (random-resized crop)."""
    flip: bool = True
    """Random horizontal flip in every training view."""
    magnitude: int = 9
    """RandAugment magnitude bin of the strong views, 0..30."""
    num_ops: int = 2
    """RandAugment ops drawn per strong view."""
    cutout: float = 0.0
    """Cutout side of the strong views, as a fraction of image_size."""

    def views(self, strong: bool = True) -> tuple[ViewSpec, ...]:
        """The three LaCoL views of these options (weak, strong, strong), or the weak view alone."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(ViewOptions) if f.name != "image_size"}
        views = lacol_views(self.image_size, **kw)
        return views if strong else views[:1]

    def check_views(self) -> None:
        choice("data.crop", self.crop, ("random", "rrc"))
        at_least(1, image_size=self.image_size)
        at_least(0, pad=self.pad)
        if not 0 <= self.cutout <= 1:
            raise ConfigError(f"data.cutout={self.cutout}: a fraction of the image side, in [0, 1]")
        if not 0 <= self.magnitude < NUM_BINS:
            raise ConfigError(f"data.magnitude={self.magnitude}: a RandAugment bin, 0..{NUM_BINS - 1}")
        if not 0 <= self.num_ops <= len(OPS):
            raise ConfigError(f"data.num_ops={self.num_ops}: 0..{len(OPS)} RandAugment ops per view")


@dataclass
class FfcvOptions:
    """``data.ffcv.*``: read by the ffcv backend only."""

    dir: str = "data/ffcv"
    """The folder of the .beton files (``lacol-convert DATASET --to ffcv``)."""
    order: str = "quasi_random"
    """Training order: quasi_random (FFCV's page-aware order, sharded by us) | random (the
    reference backend's order and batches)."""
    os_cache: bool = True
    """Read through the OS page cache (True) or FFCV's own process cache (False, with
    quasi_random for datasets larger than RAM)."""

    def check(self) -> None:
        choice("data.ffcv.order", self.order, ("quasi_random", "random"))


@dataclass
class DaliOptions:
    """``data.dali.*``: read by the dali backend only."""

    dir: str = "data/dali"
    """File datasets: the folder of the checked file lists (``lacol-convert clothing1m --to dali``)."""
    threads: int = 0
    """CPU threads of each process's DALI graph; 0 = data.num_workers. On a 16-core host with one
    GPU, 8-12 keeps the file reader and the host half of the decoder fed."""
    hw_decoder_load: float = 0.65
    """On a GPU: the share of JPEGs given to the A100/H100 hardware decoder (the rest go to the
    CUDA decoder); DALI's default."""

    def check(self) -> None:
        if not 0 <= self.hw_decoder_load <= 1:
            raise ConfigError(f"data.dali.hw_decoder_load={self.hw_decoder_load}: must be in [0, 1]")
        if self.threads < 0:
            raise ConfigError(f"data.dali.threads={self.threads}: must be >= 0 (0: data.num_workers)")


@dataclass
class DataConfig(ViewOptions):
    """The dataset, its labels and splits, the loader and its views (``ViewOptions``)."""

    dataset: str = "fashion_mnist"
    """A registered dataset (``pipelines/sources/``): fashion_mnist | cifar10 | cifar100 |
    clothing1m | folder (root/train/<class>/<image>, README "Your own data") | list
    (root/train.csv of path,label[,clean_label])."""
    root: str | None = None
    """Dataset folder; None means the dataset's default place (see README, Data)."""
    backend: str = "torch"
    """A registered loader backend (``pipelines/build.py``): torch (the reference) | ffcv (reads
    ``data.ffcv.dir/{dataset}_{split}.beton``, made by ``lacol-convert DATASET --to ffcv``) | dali
    (GPU decode and views; CPU mode without a GPU)."""
    ffcv: FfcvOptions = field(default_factory=FfcvOptions)
    """The ffcv backend's own settings."""
    dali: DaliOptions = field(default_factory=DaliOptions)
    """The dali backend's own settings."""
    noise: str = "instance"
    """Synthetic label noise on the training labels: none | symmetric | symmetric_any (may keep the
    true label, as DivideMix's code) | asymmetric | asymmetric_cdr (CDR's Fashion-MNIST map) |
    instance | cifar-n:KEY. Clothing1M's labels are already noisy: use none."""
    noise_rate: float = 0.4
    """Fraction of training labels the synthetic noise changes (in [0, 1))."""
    noise_seed: int = 0
    """Seed of the noise draw (kept apart from train.seed, so seeds vary training, not labels)."""
    cifar_n_file: str | None = None
    """noise=cifar-n:KEY: the CIFAR-N release file (CIFAR-10_human.pt / CIFAR-100_human.pt)."""
    label_file: str | None = None
    """File datasets: a ``key label`` file (Clothing1M's format, e.g. ``lacol audit --relabel``'s
    output) whose labels replace the training split's; every training key must be in it."""
    train_subset: int = 0
    """Train on a fixed random subset of N samples of the train split (the same for every seed
    and noise draw); 0 = all."""
    val_size: int = 0
    """Hold out N samples of the (noisy) train split as a validation split, disjoint from the
    training rows and fixed for every seed: its accuracy on the noisy labels (what a user has)
    is measured every epoch and picks the best epoch (``best.safetensors``); test accuracy is
    reported, never used to choose. Taken from the rows a ``train_subset`` leaves out when
    there are enough. 0 = none. Clothing1M has its own clean validation split."""
    cv_folds: int = 0
    """Cross-validation (the label-audit benchmark's cleanlab arm): split the training rows into
    this many fixed folds, train on all but fold ``cv_fold`` and, at the end, write the held-out
    fold's predicted probabilities (``heldout_probs.npz``). 0 = off."""
    cv_fold: int = 0
    """The held-out fold, 0..cv_folds-1."""
    batch_size: int = 128
    """Per-process batch; an optimiser step sees batch_size x processes x grad_accum samples (the
    losses' batch statistics span batch_size x processes: optim.grad_accum)."""
    eval_batch_size: int = 512
    """Per-process batch of evaluation."""
    num_workers: int = 2
    """Decoding workers (torch backend: DataLoader processes; ffcv/dali: threads)."""
    decode_size: int = 256
    """File datasets: images are decoded to this square (shorter side, centre kept)."""

    def validate(self) -> "DataConfig":
        """Refuse a wrong key with the fix in the message; the dataset's facts are its entry's."""
        choice("data.dataset", self.dataset, tuple(DATASETS))
        info = DATASETS[self.dataset]
        choice("data.backend", self.backend, tuple(BACKENDS))
        self.ffcv.check()
        self.dali.check()
        kinds = ("none", *(k for k in NOISE_KINDS if k != "cifar-n"))
        if self.noise not in kinds and not self.noise.startswith("cifar-n"):
            choice("data.noise", self.noise, (*kinds, "cifar-n:KEY"))
        if self.noise != "none" and not self.noise.startswith("cifar-n") and not 0 <= self.noise_rate < 1:
            raise ConfigError(f"data.noise_rate={self.noise_rate}: must be in [0, 1)")
        if self.cv_folds and not 0 <= self.cv_fold < self.cv_folds or self.cv_folds == 1 or self.cv_folds < 0:
            raise ConfigError(f"data.cv_folds={self.cv_folds}, data.cv_fold={self.cv_fold}: folds >= 2 (or 0, off) "
                              f"and the held-out fold in 0..cv_folds-1")
        if self.val_size and info.own_validation:
            raise ConfigError(f"data.val_size: {self.dataset} has its own clean validation split (used already); "
                              f"set data.val_size=0")
        if info.already_noisy and self.noise != "none":
            raise ConfigError(f"data.noise: {self.dataset}'s labels are already noisy; set data.noise=none")
        if self.label_file is not None and self.noise != "none":
            raise ConfigError(f"data.label_file replaces the training labels and data.noise={self.noise} would "
                              f"draw noise over them: set data.noise=none")
        if self.noise_seed < 0:
            raise ConfigError(f"data.noise_seed={self.noise_seed}: seeds are >= 0")
        at_least(1, batch_size=self.batch_size, eval_batch_size=self.eval_batch_size, decode_size=self.decode_size)
        at_least(0, num_workers=self.num_workers, train_subset=self.train_subset, val_size=self.val_size)
        self.check_views()
        return self
