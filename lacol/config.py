"""One typed config tree: dataclasses with a docstring under each field, YAML recipes and
``key=value`` overrides, validated once with the fix in the message."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from pipelines.data_config import ConfigError, DataConfig, choice  # noqa: F401 (ConfigError re-exported)

from .methods.registry import METHODS  # filled as lacol imports lacol.methods
from .models import ENCODERS
from .text import first_line  # noqa: F401  (re-exported: the readers of run folders use it)


@dataclass
class ModelConfig:
    arch: str = "small_cnn"
    """small_cnn (28 px) | resnet18 | resnet34 (CIFAR stem) | resnet50 (ImageNet stem)."""
    width: int = 16
    """small_cnn: channels of its first stage (then 2x and 4x)."""
    embed_dim: int = 128
    """Output of the embedding head f (2-layer MLP, L2-normalised)."""
    embed_from: str = "features"
    """Input of the embedding head: features (the encoder's pooled features, as the paper's
    figure) | logits (the classifier's outputs, a reading of the paper's text; a study arm)."""
    pretrained: str | None = None
    """Encoder weights (.pth or .safetensors, torchvision key names for resnet50)."""
    channels_last: bool = True
    """Model weights and activations in channels_last memory format (faster convolutions on GPUs)."""
    compile: bool = False
    """torch.compile the model."""
    sync_bn: bool = False
    """SyncBatchNorm across processes (GPUs only): batch statistics of the global batch."""
    bn_stats: str = "weak"
    """Running batch-norm statistics of the concatenated three-view forward: weak (tracked on
    the weak third, the distribution evaluation sees) | mixed (all three views)."""


@dataclass
class LossConfig:
    method: str = "lacol"
    """A registered method (``lacol/methods/``): lacol | lacol_semi (LaCoL with pseudo-labels from
    an EMA teacher, its settings in the class's defaults) | selection (LaCoL without the
    metric-space terms L_MS, L_SC) | ce_strong (plain CE on the strong view(s), every sample: the
    fair control, with LaCoL's views, warm-up, epochs and schedule) | ce (plain CE on the weak
    view, the literature's baseline)."""
    selection: str = "agree"
    """Selecting methods: agree (per batch, the weak view's prediction equals the label, with
    class_floor) | gmm (at each epoch start, an eval-mode pass over the training split; per label,
    a two-component Gaussian mixture on the CE losses keeps the low-loss component, P > 0.5)."""
    pseudo_threshold: float = 0.0
    """Selecting methods: an unselected sample whose weak-view prediction (the teacher's with
    ema_decay) is at least this confident trains the strong view(s) on that prediction
    (FixMatch's rule); 0 = off."""
    lambda_pl: float = 1.0
    """Weight of the pseudo-label term (pseudo_threshold > 0)."""
    pseudo_balance: str = "balanced"
    """Class weights of the pseudo-label term from its per-class counts in the global batch:
    balanced (inverse frequency, mean 1 per pseudo-labelled sample) | none."""
    ema_decay: float = 0.0
    """Selecting methods: an EMA teacher of the weights (decay per optimiser step) whose eval-mode
    weak-view predictions select and pseudo-label; 0 = off (the student's own predictions)."""
    ema_eval: bool = False
    """With ema_decay: evaluate and save the teacher's weights instead of the student's."""
    sc_grad: str = "detach"
    """L_SC's label-space similarities: detach (no gradient to the classifier) | through (the
    gradient also flows through the weak probabilities, the paper's Figure 3 reading; eager L_SC)."""
    warmup_penalty: float = 0.0
    """Warm-up: plus this weight x the mean negative entropy of the predictions (a confidence
    penalty, the field's usual help for asymmetric noise); 0 = off."""
    warmup_epochs: int = 2
    """Epochs of plain CE on the weak view before LaCoL's losses switch on."""
    class_floor: float = 0.0
    """Selection floor per class and batch (our addition; 0 = the paper's rule): at least this
    fraction of each label's samples is selected, the most confident in that label first."""
    class_weight: str = "balanced"
    """Per-class factor mu_k of L_LS from the selected counts: paper (eps_k / sum eps, as printed;
    its weights sum to 1, which also shrinks L_LS against L_MS and L_SC), paper_mean1 (the paper's
    up-weighting of frequent classes, rescaled to a mean weight of 1 per selected sample),
    balanced (inverse frequency, mean 1), none."""
    train_view: str = "strong"
    """View that L_LS trains on: strong (the paper's diversity preserving) | weak (ablation)."""
    ls_views: int = 1
    """Strong views L_LS trains on: 1 (A_s, the paper) | 2 (A_s and A'_s, averaged)."""
    lambda_ms: float = 1.0
    """Weight of L_MS, the negative-pair contrastive loss (0 switches it off: an ablation)."""
    lambda_sc: float = 0.5
    """Weight of L_SC, the cross-space similarity consistency loss (0 switches it off)."""
    tau: float = 0.2
    """Temperature of L_MS and L_SC's similarity logits."""
    rho: float = 0.8
    """L_SC: label-space similarities below rho are zeroed."""
    num_negatives: int = 15
    """K: negatives per anchor in L_MS, drawn from the batch among samples of another label."""
    negatives: str = "other_label"
    """Where L_MS draws its negatives: other_label (samples with another noisy label, the paper)
    | any (any other sample of the batch, as in instance discrimination; a study arm)."""
    sc_similarity: str = "cosine"
    """Label-space similarity of L_SC: cosine (the paper) | dot (CoMatch)."""
    kernel: str = "torch"
    """L_MS / L_SC implementation: torch (the eager reference) | triton (the fused kernels of
    lacol/kernels/) | auto (triton on CUDA when it imports, else torch)."""
    gather: bool = False
    """All-gather embeddings (with gradients) and weak probabilities across processes, so negatives
    and L_SC span the global batch as on one large GPU."""


@dataclass
class OptimConfig:
    epochs: int = 15
    """Training epochs, warm-up included."""
    lr: float = 0.05
    """Learning rate at the global batch the recipe states (no automatic scaling)."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """Nesterov momentum."""
    weight_decay: float = 5e-4
    """SGD weight decay (L2), on every parameter."""
    schedule: str = "cosine"
    """cosine | multistep (lr x gamma at each milestone epoch)."""
    milestones: list[int] = field(default_factory=list)
    """schedule=multistep: the epochs at which lr is multiplied by gamma."""
    gamma: float = 0.1
    """schedule=multistep: the factor at each milestone."""
    warmup_lr_epochs: float = 0.0
    """Linear learning-rate ramp from 0 over this many epochs."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step. The gradient is that of the accumulated
    global batch; selection, class weights, negatives and L_SC are computed per micro-batch
    (batch_size x processes), as on a machine that holds only that many samples. Windows start
    at each epoch's first batch (the last is cut short), so checkpoints never hold a pending
    gradient."""


@dataclass
class TrainConfig:
    name: str = ""
    """Run folder name under out_dir; empty: <dataset>-<method>-<noise><rate>-s<seed>, then
    -n<noise_seed> for a noise draw other than 0."""
    out_dir: str = "runs"
    """Folder of the run folders."""
    seed: int = 0
    """Seed of initialisation, data order, views and negatives (not of the noise: data.noise_seed)."""
    mixed_precision: str | None = "no"
    """no | bf16 | fp16 (fp16 needs a GPU: Accelerate disables autocast on CPU); null takes the
    launcher's (accelerate config file or --mixed_precision)."""
    log_every: int = 50
    """Write a metrics line every N optimiser steps (a logged step waits for the GPU once; the
    others never do). Epoch lines are always written."""
    checkpoint_every: int = 0
    """Also checkpoint every N steps inside an epoch; 0 = at epoch ends only."""
    keep_checkpoints: int = 2
    """Checkpoints kept in the run folder (the newest)."""
    stop_after: int = 0
    """Stop after this many epochs in this invocation (checkpointed; --resume continues); the
    schedule stays that of optim.epochs. 0 = run to the end."""
    cpu: bool = False
    """Train on CPU even where a GPU is present."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms, and the fused L_MS sums its gradients through a
    reverse index (bitwise reproducible) instead of atomic adds."""
    threads: int = 0
    """torch intra-op threads on CPU; 0 = torch's default."""
    progress: bool = True
    """Rich live progress bar (the per-epoch table is always printed)."""
    audit: bool = True
    """Record the label audit's evidence (weak-view probability of the given label, prediction,
    selection) per training sample and epoch after warm-up; written as audit.npz, read by
    ``lacol audit``. Memory: 8 bytes per sample and recorded epoch on the training device."""
    trackers: list[str] = field(default_factory=list)
    """Experiment trackers besides metrics.jsonl, through Accelerate's ``log_with``: any of
    tensorboard, wandb, mlflow, aim (logs under the run folder's ``trackers/``; the resolved
    config as hyper-parameters, the same scalars as metrics.jsonl)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        d, m, l, o, t = self.data, self.model, self.loss, self.optim, self.train
        for key, v in flat(self.to_dict()).items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key}={v}: must be a finite number")
        d.validate()
        choice("model.arch", m.arch, tuple(ENCODERS))
        choice("loss.method", l.method, tuple(METHODS))
        choice("loss.class_weight", l.class_weight, ("paper", "paper_mean1", "balanced", "none"))
        choice("loss.selection", l.selection, ("agree", "gmm"))
        choice("loss.pseudo_balance", l.pseudo_balance, ("balanced", "none"))
        choice("loss.sc_grad", l.sc_grad, ("detach", "through"))
        if not 0 <= l.pseudo_threshold <= 1:
            raise ConfigError(f"loss.pseudo_threshold={l.pseudo_threshold}: in [0, 1] (0 = off; FixMatch uses 0.95)")
        if not 0 <= l.ema_decay < 1:
            raise ConfigError(f"loss.ema_decay={l.ema_decay}: in [0, 1) (0 = off; ELR+ uses 0.997)")
        if l.ema_eval and not l.ema_decay:
            raise ConfigError("loss.ema_eval=true needs an EMA teacher: set loss.ema_decay (e.g. 0.99)")
        if l.sc_grad == "through" and l.kernel == "triton":
            raise ConfigError("loss.sc_grad=through runs the eager L_SC (the fused kernel has no gradient for the "
                              "probabilities): set loss.kernel=auto or torch")
        choice("loss.train_view", l.train_view, ("strong", "weak"))
        choice("loss.ls_views", l.ls_views, (1, 2))
        choice("loss.sc_similarity", l.sc_similarity, ("cosine", "dot"))
        choice("loss.negatives", l.negatives, ("other_label", "any"))
        choice("model.embed_from", m.embed_from, ("features", "logits"))
        choice("model.bn_stats", m.bn_stats, ("weak", "mixed", "per_view"))
        choice("loss.kernel", l.kernel, ("torch", "triton", "auto"))
        choice("optim.schedule", o.schedule, ("cosine", "multistep"))
        choice("train.mixed_precision", t.mixed_precision, ("no", "bf16", "fp16", None))
        for key, v in (("optim.epochs", o.epochs),
                       ("optim.grad_accum", o.grad_accum), ("loss.num_negatives", l.num_negatives),
                       ("train.log_every", t.log_every),
                       ("model.width", m.width), ("model.embed_dim", m.embed_dim),
                       ("train.keep_checkpoints", t.keep_checkpoints)):
            if v < 1:
                raise ConfigError(f"{key}={v}: must be >= 1")
        for key, v in (("train.threads", t.threads),
                       ("train.checkpoint_every", t.checkpoint_every), ("train.stop_after", t.stop_after),
                       ("optim.lr", o.lr),
                       ("optim.momentum", o.momentum), ("optim.weight_decay", o.weight_decay),
                       ("optim.warmup_lr_epochs", o.warmup_lr_epochs), ("loss.lambda_ms", l.lambda_ms),
                       ("loss.lambda_sc", l.lambda_sc), ("loss.lambda_pl", l.lambda_pl),
                       ("loss.warmup_penalty", l.warmup_penalty)):
            if v < 0:
                raise ConfigError(f"{key}={v}: must be >= 0")
        if t.name and (t.name in (".", "..") or Path(t.name).name != t.name or "\\" in t.name):
            raise ConfigError(f"train.name={t.name!r}: a plain folder name (no '/', no '..'); the run goes in "
                              f"train.out_dir")
        if not 0 <= l.warmup_epochs <= o.epochs:
            raise ConfigError(f"loss.warmup_epochs={l.warmup_epochs}: must be in 0..optim.epochs ({o.epochs})")
        if any(not 0 < e < o.epochs for e in o.milestones):
            raise ConfigError(f"optim.milestones={o.milestones}: each must be in 1..{o.epochs - 1}")
        if not 0 <= l.class_floor <= 1:
            raise ConfigError(f"loss.class_floor={l.class_floor}: must be in [0, 1]")
        if l.tau < 1e-3:  # exp(<z, z'>/tau) of unit vectors overflows fp32 well before 1e-3
            raise ConfigError(f"loss.tau={l.tau}: must be >= 0.001 (the paper uses 0.2)")
        if not 0 < l.rho <= 1:  # rho > 1 zeroes every row of W_l, diagonal included: a NaN loss
            raise ConfigError(f"loss.rho={l.rho}: must be in (0, 1] (the paper uses 0.8)")
        if l.num_negatives > 4096:
            raise ConfigError(f"loss.num_negatives={l.num_negatives}: at most 4096 (the paper uses 15)")
        if not 0 <= o.momentum < 1:
            raise ConfigError(f"optim.momentum={o.momentum}: must be in [0, 1)")
        if o.nesterov and o.momentum == 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
        if o.gamma <= 0:
            raise ConfigError(f"optim.gamma={o.gamma}: must be > 0 (the lr is multiplied by it at each milestone)")
        if t.seed < 0:
            raise ConfigError(f"train.seed={t.seed}: seeds are >= 0")
        if m.sync_bn and m.bn_stats != "mixed":
            raise ConfigError(f"model.sync_bn=true with model.bn_stats={m.bn_stats}: SyncBatchNorm normalises and "
                              f"tracks all three views together; set model.bn_stats=mixed (or model.sync_bn=false)")
        if l.kernel == "triton" and importlib.util.find_spec("triton") is None:
            raise ConfigError("loss.kernel=triton needs Triton: pip install -e '.[triton]' (or loss.kernel=auto)")
        for name in t.trackers:
            if name not in TRACKERS:
                choice("train.trackers", name, tuple(TRACKERS))
            if importlib.util.find_spec(TRACKERS[name]) is None:
                raise ConfigError(f"train.trackers={name} needs the {TRACKERS[name]} package: pip install "
                                  f"{TRACKERS[name]} (or pip install -e '.[trackers]')")
        return self

    @property
    def run_name(self) -> str:
        if self.train.name:
            return self.train.name
        noise = "" if self.data.noise == "none" else f"-{self.data.noise.replace(':', '_')}{self.data.noise_rate:g}"
        draw = f"-n{self.data.noise_seed}" if self.data.noise_seed and noise else ""
        return f"{self.data.dataset}-{self.loss.method}{noise}-s{self.train.seed}{draw}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(key: str, text: str, hint) -> Any:
    if hint in (str, str | None):  # taken as written: YAML would read no/off as false
        return None if hint is not str and text in ("", "null", "None") else text
    value = yaml.safe_load(text) if text != "" else None
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as text
            value = float(value)
        except ValueError:
            pass
    return _check_type(key, value, hint)


def _check_type(key: str, value, hint) -> Any:
    """The value as the field's type, or a ConfigError naming the key."""
    s = str(hint)
    if value is None:
        if "None" in s:
            return None
        raise ConfigError(f"{key}: needs a value")
    if s.startswith("list[str]"):
        if isinstance(value, str):  # train.trackers=tensorboard,wandb
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}={value!r}: expected names such as a,b (or a YAML list)")
        return value
    if s.startswith("list"):
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: expected a list such as [100, 150]")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):  # 2.7 -> 2, true -> 1 silently
            raise ConfigError(f"{key}={value!r}: expected whole numbers such as [100, 150]")
        return value
    if hint is bool or s.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{key}={value!r}: expected a single value")
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: expected text; quote it in YAML ('no' reads as false)")
    return str(value)


def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "aim": "aim"}
"""``train.trackers`` values (Accelerate's ``log_with`` names) and the package each needs."""

MERGED = {"loss.deterministic": "train.deterministic"}
"""Keys of earlier versions merged into another key (an old run's default is not carried)."""

MOVED = {"data.ffcv_dir": "data.ffcv.dir", "data.ffcv_order": "data.ffcv.order", "data.os_cache": "data.ffcv.os_cache",
         "data.dali_dir": "data.dali.dir", "data.dali_threads": "data.dali.threads",
         "data.dali_hw_decoder_load": "data.dali.hw_decoder_load", "loss.bn_stats": "model.bn_stats"}
"""Keys of earlier versions and the key that now holds the same setting (an old run folder's
value is carried over)."""


def flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict (``Config.to_dict``) as ``{"section.key": value}``, sub-sections
    as ``section.sub.key``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set(cfg: Config, key: str, value, from_text: bool) -> None:
    """Set ``section.key`` (or ``section.sub.key``) from a recipe's value or a command line's text;
    a mapping for a sub-section sets each of its keys."""
    if key in MERGED or key in MOVED:
        raise ConfigError(f"{key} {'was merged into' if key in MERGED else 'is now'} "
                          f"{MERGED.get(key) or MOVED[key]}: set that instead")
    section, _, name = key.partition(".")
    sections = _sections()
    if section not in sections or not name:
        raise ConfigError(f"unknown config key {key!r}: keys look like SECTION.NAME with SECTION one of "
                          f"{', '.join(sections)}")
    obj, where = getattr(cfg, section), section
    *subs, name = name.split(".")
    for sub in subs:
        if not dataclasses.is_dataclass(getattr(obj, sub, None)):
            raise ConfigError(f"unknown config key {key!r}: {where} has no sub-section {sub!r}"
                              f"{_subsections_named(obj)}")
        obj, where = getattr(obj, sub), f"{where}.{sub}"
    hints = get_type_hints(type(obj))
    if name not in hints:
        raise ConfigError(f"unknown config key {key!r}: {where} has {', '.join(hints)}")
    if dataclasses.is_dataclass(getattr(obj, name)):
        if from_text or not isinstance(value, dict):
            raise ConfigError(f"{key} is a sub-section: set its keys ({key}.KEY=value; in a recipe, a mapping "
                              f"under {name}:) -- it has {', '.join(get_type_hints(type(getattr(obj, name))))}")
        for k, v in value.items():
            _set(cfg, f"{key}.{k}", v, from_text=False)
        return
    hint = hints[name]
    setattr(obj, name, _coerce(key, value, hint) if from_text else _check_type(key, value, hint))


def _subsections_named(obj) -> str:
    subs = [f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]
    return f" (its sub-sections: {', '.join(subs)})" if subs else ""


def _method_settings(cfg: Config, blocks: dict, overrides) -> None:
    """The settings of the method that will run (the command line's ``loss.method``, else the
    recipe's): its class's ``defaults``, then the recipe's ``methods.<name>`` block."""
    method = cfg.loss.method
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq and key.strip() == "loss.method":
            method = value.strip()
    cls = METHODS.get(method)
    for key, value in (getattr(cls, "defaults", None) or {}).items():
        _set(cfg, key, value, from_text=False)
    for key, value in blocks.get(method, {}).items():
        _set(cfg, str(key), value, from_text=False)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A recipe (YAML with sections data/model/loss/optim/train, and optionally ``methods``: per
    method, ``section.key`` settings applied whenever that method runs) with ``section.key=value``
    overrides applied, validated. Order: the sections, the method's class defaults, its
    ``methods`` block, the overrides."""
    cfg, blocks = Config(), {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no config file {path}; recipes are in configs/")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except RecursionError:  # deep nesting or a self-referential alias
            raise ConfigError(f"{path}: nested too deep (or an alias refers to itself); recipes are flat "
                              f"sections of keys") from None
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f":{where.line + 1}:{where.column + 1}" if where is not None else ""
            raise ConfigError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected sections data/model/loss/optim/train")
        blocks = raw.pop("methods", None) or {}
        if not isinstance(blocks, dict) or not all(isinstance(b, dict) for b in blocks.values()):
            raise ConfigError(f"{path}: section 'methods' maps a method name to its settings "
                              f"(methods: {{ce_strong: {{optim.lr: 0.1}}}})")
        for name in blocks:
            if name not in METHODS:
                choice(f"{path}: methods.{name}", name, tuple(METHODS))
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: section {section!r} must be a mapping of keys")
            for k, v in values.items():
                _set(cfg, f"{section}.{k}", v, from_text=False)
    _method_settings(cfg, blocks, overrides)
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"override {item!r}: write it as section.key=value")
        _set(cfg, key.strip(), value.strip(), from_text=True)
    return cfg.validate()


NEUTRAL = {"train.progress", "train.log_every", "train.threads", "train.out_dir", "train.name", "train.checkpoint_every",
           "train.keep_checkpoints", "train.stop_after", "train.trackers", "data.num_workers", "data.dali.threads",
           "data.eval_batch_size", "data.ffcv.dir", "data.dali.dir"}
"""Keys that cannot change what a run computes (progress, logging, threads, workers, where its
files go): the only ones that may differ when a run folder is continued or reused."""


def config_diff(stored: Config, asked: Config) -> list[tuple[str, Any, Any]]:
    """(key, stored value, asked value) of every key outside ``NEUTRAL`` that differs."""
    a, b = flat(stored.to_dict()), flat(asked.to_dict())
    return [(k, a[k], b[k]) for k in a if k not in NEUTRAL and a[k] != b[k]]


def same_experiment(run: str | Path, asked: Config) -> None:
    """Refuse, naming every differing key with both values, when the run folder ``run`` holds
    another experiment than ``asked`` (its config.yaml, which must read)."""
    run = Path(run)
    try:
        stored = read_run_config(run)
    except (yaml.YAMLError, ConfigError, AttributeError, TypeError) as e:
        raise ConfigError(f"{run / 'config.yaml'}: not a config lacol wrote ({first_line(e)}); this folder "
                          f"cannot be continued: choose another train.name or a fresh train.out_dir") from None
    diff = config_diff(stored, asked)
    if diff:
        keys = "; ".join(f"{k}: {old!r} in the folder, {new!r} asked" for k, old, new in diff)
        raise ConfigError(f"{run} holds another experiment ({keys}): a run folder is one experiment; choose "
                          f"another train.name (lacol compare: --prefix) or a fresh train.out_dir")


def config_yaml(cfg: Config) -> str:
    """The resolved config as the YAML a run folder keeps (``config_from_dict`` reads it back)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def read_run_config(run: str | Path) -> Config:
    """A run folder's resolved ``config.yaml`` (``config_from_dict``); a missing one is named."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run} a `lacol train` run folder?")
    try:
        d = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{path}: not a config lacol wrote ({type(e).__name__}); this folder cannot be "
                          f"continued: choose another train.name or a fresh train.out_dir") from None
    if not isinstance(d, dict) or not all(isinstance(v, dict) for v in d.values()):
        raise ConfigError(f"{path}: expected sections data/model/loss/optim/train")
    return config_from_dict(d)


def config_from_dict(d: dict) -> Config:
    """A saved run's config.yaml (keys merged or moved since are carried over to their new place)."""
    cfg = Config()
    for old, v in flat(d).items():
        if old in MERGED and not v:
            continue  # an old default: nothing to carry
        _set(cfg, MERGED.get(old) or MOVED.get(old, old), v, from_text=False)
    return cfg.validate()
