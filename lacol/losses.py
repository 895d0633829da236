"""LaCoL's losses (the eager reference) and the method object the trainer calls.

Notation as in DESIGN.md: p_w weak-view probabilities, z_w / z_s / z_s2 L2-normalised embeddings
of the weak and the two strong views, y the noisy labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from .config import ConfigError, LossConfig
from .models import set_views


def select(p_weak: torch.Tensor, labels: torch.Tensor, class_floor: float = 0.0) -> torch.Tensor:
    """Selection in label space: a sample is trusted when the weak view's prediction equals its label.

    ``class_floor`` q > 0 (our addition, not the paper's): among the batch's samples labelled k,
    at least ceil(q * n_k) are selected, those with the highest p_w[k]. Without it a class the
    warmed-up model never predicts is never selected, never trained, and never predicted: it stays
    dead for the rest of the run (measured: Fashion-MNIST's Shirt under 40% instance noise)."""
    selected = p_weak.argmax(1) == labels
    if class_floor <= 0:
        return selected
    conf = p_weak.gather(1, labels[:, None]).squeeze(1)
    same = labels[:, None] == labels[None, :]
    rank = ((conf[None, :] > conf[:, None]) & same).sum(1)  # same-label samples more confident than i
    return selected | (rank < torch.ceil(class_floor * same.sum(1)))


def class_weights(counts: torch.Tensor, rule: str) -> torch.Tensor:
    """Per-class factor mu_k from the selected counts eps_k (float, (C,)).

    ``paper``: mu_k = eps_k / sum_j eps_j, as printed. ``paper_mean1``: the same up-weighting,
    scaled so the mean weight *per selected sample* is 1 (mu_k = eps_k sum_j eps_j / sum_j eps_j^2),
    which separates the paper's weighting from its scale. ``balanced``: inverse frequency over
    the classes that have selected samples, mean weight per selected sample 1. ``none``: 1."""
    counts = counts.float()
    if rule == "none":
        return torch.ones_like(counts)
    total = counts.sum()
    if rule == "paper":
        return counts / total.clamp_min(1)
    if rule == "paper_mean1":
        return counts * total / (counts * counts).sum().clamp_min(1)
    if rule == "balanced":
        present = (counts > 0).sum().clamp_min(1)
        return torch.where(counts > 0, total / (present * counts.clamp_min(1)), torch.zeros_like(counts))
    raise ValueError(f"loss.class_weight={rule!r}: choose paper, paper_mean1, balanced or none")


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
                normaliser: torch.Tensor | None = None) -> torch.Tensor:
    """L_LS: sum over masked samples of mu[y] * CE, divided by the number masked (or by
    ``normaliser``: the global count when several processes share a batch, each summing its own
    samples)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    w = mu[labels] * mask.float()
    n = mask.sum() if normaliser is None else normaliser
    return (w * ce).sum() / n.clamp_min(1)


def sample_negatives(labels: torch.Tensor, k: int, generator: torch.Generator | None = None):
    """K in-batch negatives per anchor, each with a different noisy label, in O(B*K) memory.

    Without replacement when an anchor has >= K candidates (a uniformly random K-subset of them),
    with replacement when it has fewer; ``valid`` is False for anchors with none (they are
    skipped). A deterministic function of the labels and the generator's state, on any device,
    with no host sync: processes that share both draw the same negatives.

    How: the batch sorted by label puts each class in one segment; an anchor's candidates are the
    m = B - n_c positions outside its class's segment, numbered 0..m-1 skipping it. Robert Floyd's
    algorithm draws a uniform K-subset of 0..m-1 in K vectorised steps (step s draws t in 0..j,
    j = m - K + s, and takes j instead when t was drawn before). Returns (idx (B, K), valid (B,))."""
    b, dev = labels.shape[0], labels.device
    ordered, order = torch.sort(labels, stable=True)
    first = torch.searchsorted(ordered, labels, right=False)  # start of the anchor's class segment
    n_c = torch.searchsorted(ordered, labels, right=True) - first
    m = b - n_c  # candidates
    u = torch.rand(b, k, device=dev, generator=generator, dtype=torch.float64)
    picks = torch.empty(b, k, dtype=torch.long, device=dev)
    for step in range(k):
        j = m - k + step
        t = torch.minimum((u[:, step] * (j + 1).clamp_min(1)).long(), j.clamp_min(0))
        dup = (picks[:, :step] == t[:, None]).any(1)
        picks[:, step] = torch.where(dup, j, t)
    with_repl = torch.minimum((u * m[:, None]).long(), (m - 1).clamp_min(0)[:, None])
    r = torch.where((m >= k)[:, None], picks, with_repl)
    pos = r + n_c[:, None] * (r >= first[:, None])  # skip the anchor's own segment
    return order[pos.clamp_max(b - 1)], m > 0


def ms_loss(z_w: torch.Tensor, z_s: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor,
            tau: float, normaliser: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """L_MS: per anchor, InfoNCE of the positive <z_w_i, z_s_i> against <z_w_i, z_s_j> for its
    negatives j (positive in the denominator), mean over valid anchors. ``z_s`` may hold more
    rows than ``z_w`` (a gathered global batch, this process's rows from ``offset``); ``neg``
    indexes its rows."""
    pos = (z_w * z_s[offset: offset + z_w.shape[0]]).sum(1, keepdim=True)
    # index_select, not z_s[neg]: its backward (index_add_) is deterministic on a CPU, where the
    # advanced-indexing backward (index_put_ with accumulate) is not with several threads
    negs = torch.einsum("bd,bkd->bk", z_w, z_s.index_select(0, neg.reshape(-1)).view(*neg.shape, -1))
    logits = torch.cat([pos, negs], 1) / tau
    per_anchor = torch.logsumexp(logits, 1) - logits[:, 0]
    n = valid.sum() if normaliser is None else normaliser
    return (per_anchor * valid.float()).sum() / n.clamp_min(1)


def _own(rows: int, cols: int, offset: int, device) -> torch.Tensor:
    """(rows, cols) bool: True at each row's own column (the diagonal, shifted by ``offset``)."""
    return torch.arange(cols, device=device)[None, :] == (torch.arange(rows, device=device) + offset)[:, None]


def label_similarity(p: torch.Tensor, rho: float, kind: str = "cosine", p_cols: torch.Tensor | None = None,
                     offset: int = 0) -> torch.Tensor:
    """W_l: similarity of weak probabilities (cosine, or dot as in CoMatch), diagonal 1, entries
    below rho zeroed, rows normalised. No gradient. ``p_cols``: the columns' probabilities (a
    gathered global batch, whose rows ``offset``.. are ``p``); default ``p``."""
    p = p.detach().float()
    cols = p if p_cols is None else p_cols.detach().float()
    if kind == "cosine":
        p, cols = F.normalize(p, dim=1), F.normalize(cols, dim=1)
    w = (p @ cols.T).masked_fill(_own(p.shape[0], cols.shape[0], offset, p.device), 1.0)
    w = w * (w >= rho)
    return w / w.sum(1, keepdim=True)


def sc_loss(w_label: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor, tau: float,
            z_cols: torch.Tensor | None = None, offset: int = 0, normaliser: int | None = None) -> torch.Tensor:
    """L_SC: mean over rows of CE(W_l[i], softmax(S[i])), S_ij = <z_s_i, z_s_j>/tau off the
    diagonal and <z_s_i, z_s2_i>/tau on it. ``z_cols``/``offset``: columns from a gathered global
    batch; ``normaliser``: the global row count (each process sums its own rows)."""
    cols = z_s if z_cols is None else z_cols
    own = _own(z_s.shape[0], cols.shape[0], offset, z_s.device)
    s = torch.where(own, (z_s * z_s2).sum(1, keepdim=True), z_s @ cols.T)
    logp = F.log_softmax(s / tau, dim=1)
    return -(w_label * logp).sum() / (normaliser or z_s.shape[0])


def resolve_kernels(kernel: str, device: torch.device, deterministic: bool = False):
    """The (L_MS, L_SC) implementations ``loss.kernel`` selects for tensors on ``device``, with one
    signature each: ``ms(z_w, z_s, neg, valid, tau, normaliser=, offset=)`` and ``sc(p_w, z_s,
    z_s2, rho, tau, similarity, p_cols=, z_cols=, offset=, normaliser=)``. ``auto``: the fused
    Triton kernels on CUDA when Triton imports, else the eager reference (config validation
    already refused ``triton`` without Triton)."""
    fused = kernel == "triton" or (kernel == "auto" and device.type == "cuda")
    if fused:
        try:
            from .kernels.ms import ms_loss_fused
            from .kernels.sc import sc_loss_fused
        except ImportError:
            if kernel == "triton":
                raise ConfigError("loss.kernel=triton needs Triton: pip install -e '.[triton]'") from None
            fused = False
    if fused:
        # not deterministic: the kernel still follows torch.use_deterministic_algorithms at call time
        return partial(ms_loss_fused, deterministic=True if deterministic else None), sc_loss_fused
    return ms_loss, sc_reference


def sc_reference(p_w, z_s, z_s2, rho: float, tau: float, similarity: str = "cosine", p_cols=None, z_cols=None,
                 offset: int = 0, normaliser: int | None = None) -> torch.Tensor:
    """L_SC from the weak probabilities: ``label_similarity`` then ``sc_loss`` (the signature of
    the fused kernel)."""
    w_l = label_similarity(p_w, rho, similarity, p_cols=p_cols, offset=offset)
    return sc_loss(w_l, z_s, z_s2, tau, z_cols=z_cols, offset=offset, normaliser=normaliser)


def selection_stats(selected: torch.Tensor, index: torch.Tensor, label: torch.Tensor, clean: torch.Tensor):
    """(selected, selected & clean, clean, known) counts over samples whose clean label is known;
    ``clean`` (the split's clean labels, -1 unknown) lives on the training device: no host sync."""
    c = clean[index]
    known = c >= 0
    is_clean = (c == label) & known
    sel = selected & known
    return torch.stack([sel.sum(), (sel & is_clean).sum(), is_clean.sum(), known.sum()]).float()



class NonFiniteLoss(RuntimeError):
    """Training stopped at the first non-finite loss (``train.FiniteGuard``)."""


@dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    selected: torch.Tensor | None = None
    """(B,) bool: the samples L_LS trained on (None in warm-up and for CE)."""
    class_counts: torch.Tensor | None = None
    selection: torch.Tensor | None = None
    """(4,) float ``selection_stats`` of this process's batch (None without selection or clean labels)."""
    value: torch.Tensor | None = None
    """The total loss of the global batch (``loss`` is this process's share, scaled for DDP)."""
    p_weak: torch.Tensor | None = None
    """(B, C) detached weak-view probabilities (the label audit's evidence)."""


class Dist:
    """This process's place among ``world`` processes and the collectives the losses need
    (identities on one process)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    def all_gather(self, t: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Rows of every process, in rank order; with ``grad``, gradients flow back to the owner."""
        if self.world == 1:
            return t
        if grad:
            from torch.distributed.nn.functional import all_gather
            return torch.cat(all_gather(t))
        out = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(out, t.contiguous())
        return torch.cat(out)


class Method:
    """LaCoL (or the CE baseline) as one call: ``method(model, batch, epoch, step)``.

    Global semantics over ``dist.world`` processes: the selected counts behind the class weights
    are all-reduced, and every term is a sum over this process's samples divided by the global
    count, times ``world`` (DDP averages gradients over processes, so the update equals one
    process on the whole global batch). With ``loss.gather``, embeddings (with gradients) and weak
    probabilities are all-gathered, so negatives and L_SC's columns span the global batch; the
    negatives are then drawn alike on every process.

    The method owns what a step needs besides the model: its kernels (resolved once, here), the
    negatives' generator (seeded from ``seed``, the epoch and the step, so a resumed step draws
    the same negatives), and the selection statistics against ``clean`` labels (the split's, on
    the training device, -1 where unknown)."""

    def __init__(self, cfg: LossConfig, num_classes: int, dist: Dist | None = None, *, seed: int = 0,
                 device="cpu", clean: torch.Tensor | None = None, deterministic: bool = False):
        self.cfg, self.num_classes, self.dist = cfg, num_classes, dist or Dist()
        device = torch.device(device)
        self.ms, self.sc = resolve_kernels(cfg.kernel, device, deterministic)
        self.seed, self.clean = seed, clean
        self.gen = torch.Generator(device=device)
        # gathered losses draw negatives over the global batch: the same draw on every process
        self.rank_seed = 0 if cfg.gather else self.dist.rank

    @property
    def metric(self) -> bool:
        """Whether steps after warm-up compute the metric-space terms (L_MS or L_SC)."""
        c = self.cfg
        return c.method == "lacol" and (c.lambda_ms > 0 or c.lambda_sc > 0)

    def class_counts(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked samples per class over the global batch (float (C,)), by index_add_: no boolean
        indexing and no bincount, which sync with the host."""
        return self.dist.all_reduce(torch.zeros(self.num_classes, device=y.device).index_add_(0, y, mask.float()))

    def needs_strong(self, epoch: int) -> bool:
        return self.cfg.method != "ce" and epoch >= self.cfg.warmup_epochs

    def num_views(self, epoch: int) -> int:
        """Views a step of ``epoch`` needs: the weak view alone in warm-up and for CE on it; weak
        and strong for the controls (a second strong view when L_LS trains on two); all three
        for LaCoL."""
        c = self.cfg
        if not self.needs_strong(epoch):
            return 1
        if self.metric:
            return 3
        return 3 if c.ls_views == 2 and c.train_view == "strong" else 2

    def __call__(self, model, batch, epoch: int, step: int = 0) -> StepOutput:
        """The losses of step ``step`` of epoch ``epoch`` on ``batch``."""
        c = self.cfg
        d = self.dist
        b, y = len(batch), batch.label
        if not self.needs_strong(epoch):
            set_views(model, c.bn_stats, None)
            logits, _ = model(batch.weak, embed=False)
            loss = F.cross_entropy(logits.float(), y)  # equal batches on every rank: DDP's mean is global
            value = self._global_mean(loss)
            return StepOutput(loss, {"ce": value}, value=value, p_weak=logits.detach().float().softmax(1))
        views = [v for v in (batch.weak, batch.strong, batch.strong2) if v is not None]
        set_views(model, c.bn_stats, b)
        logits, z = model(torch.cat(views), embed=self.metric)
        set_views(model, c.bn_stats, None)
        logits_w, logits_s, *rest = logits.float().split(b)
        logits_s2 = rest[0] if rest else None
        p_w = logits_w.detach().softmax(1)
        if c.method == "ce_strong":  # every sample, weight 1: the loss of LaCoL's views without selection
            out = self._ce_strong(logits_w if c.train_view == "weak" else logits_s, logits_s2, y, batch.index)
            out.p_weak = p_w
            return out
        world = float(d.world)  # a Python number: a tensor built from it would be a host copy every step
        gather = c.gather and d.world > 1
        offset = d.rank * b if gather else 0
        y_all = d.all_gather(y) if gather else y
        p_all = d.all_gather(p_w) if gather else p_w
        selected = select(p_all, y_all, c.class_floor)[offset: offset + b]  # the floor sees the global batch
        counts = self.class_counts(y, selected)
        mu = class_weights(counts, c.class_weight)
        if c.train_view == "weak":
            l_ls = weighted_ce(logits_w, y, selected, mu, normaliser=counts.sum())
        elif c.ls_views == 1:
            l_ls = weighted_ce(logits_s, y, selected, mu, normaliser=counts.sum())
        else:  # both strong views: twice the supervised signal from a forward already paid for
            l_ls = weighted_ce(torch.cat([logits_s, logits_s2]), y.repeat(2), selected.repeat(2), mu,
                               normaliser=2 * counts.sum())
        loss = l_ls = world * l_ls
        terms = {"ls": l_ls}
        if not self.metric:  # selection only
            terms = {k: self._global_mean(v) for k, v in terms.items()}
            stats = None if self.clean is None else selection_stats(selected, batch.index, y, self.clean)
            return StepOutput(loss, terms, selected, counts, stats, value=self._global_mean(loss), p_weak=p_w)
        z_w, z_s, z_s2 = z.split(b)
        z_all = d.all_gather(z_s, grad=True) if gather else z_s
        if c.lambda_ms > 0:
            self.gen.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + step) * 1_009 + self.rank_seed)
            # negatives=any: every sample its own class, so every other sample is a candidate
            keys = y_all if c.negatives == "other_label" else torch.arange(y_all.shape[0], device=y_all.device)
            neg, valid = sample_negatives(keys, c.num_negatives, self.gen)
            neg, valid = neg[offset: offset + b], valid[offset: offset + b]
            l_ms = world * self.ms(z_w, z_all, neg, valid, c.tau, normaliser=d.all_reduce(valid.sum().float()),
                                   offset=offset)
            loss = loss + c.lambda_ms * l_ms
            terms["ms"] = l_ms
        if c.lambda_sc > 0:
            l_sc = world * self.sc(p_w, z_s, z_s2, c.rho, c.tau, c.sc_similarity, p_cols=p_all, z_cols=z_all,
                                   offset=offset, normaliser=b * d.world)
            loss = loss + c.lambda_sc * l_sc
            terms["sc"] = l_sc
        terms = {k: self._global_mean(v) for k, v in terms.items()}
        stats = None if self.clean is None else selection_stats(selected, batch.index, y, self.clean)
        return StepOutput(loss, terms, selected, counts, stats, value=self._global_mean(loss), p_weak=p_w)

    def _ce_strong(self, logits, logits2, y, index) -> StepOutput:
        """CE on the strong view (both strong views with ``ls_views`` 2) of every sample."""
        if self.cfg.ls_views == 2 and logits2 is not None:
            logits, y2 = torch.cat([logits, logits2]), y.repeat(2)
        else:
            y2 = y
        loss = F.cross_entropy(logits, y2)  # equal batches on every rank: DDP's mean is global
        value = self._global_mean(loss)
        everyone = torch.ones_like(y, dtype=torch.bool)
        counts = self.class_counts(y, everyone)
        stats = None if self.clean is None else selection_stats(everyone, index, y, self.clean)
        return StepOutput(loss, {"ls": value}, everyone, counts, stats, value=value)

    def _global_mean(self, t: torch.Tensor) -> torch.Tensor:
        """A term's value for the whole global batch (the mean of the processes' scaled terms)."""
        return self.dist.all_reduce(t.detach()) / self.dist.world
