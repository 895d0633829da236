"""LaCoL's losses (the eager reference) and the step's output, which the methods
(``lacol/methods/``) compute and the trainer reads; their collectives are in ``lacol/dist.py``.

Notation as in DESIGN.md (the team's reading of the paper, kept in ../shared beside the repository): p_w weak-view probabilities, z_w / z_s / z_s2 L2-normalised embeddings
of the weak and the two strong views, y the noisy labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from .config import ConfigError



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
                     offset: int = 0, grad: bool = False) -> torch.Tensor:
    """W_l: similarity of weak probabilities (cosine, or dot as in CoMatch), diagonal 1, entries
    below rho zeroed, rows normalised. No gradient unless ``grad`` (``loss.sc_grad=through``: the
    kept entries and the row sums carry it to p). ``p_cols``: the columns' probabilities (a
    gathered global batch, whose rows ``offset``.. are ``p``); default ``p``."""
    p = p.float() if grad else p.detach().float()
    cols = p if p_cols is None else (p_cols.float() if grad else p_cols.detach().float())
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


def resolve_kernels(kernel: str, device: torch.device, deterministic: bool = False, sc_grad: str = "detach"):
    """The (L_MS, L_SC) implementations ``loss.kernel`` selects for tensors on ``device``, with one
    signature each: ``ms(z_w, z_s, neg, valid, tau, normaliser=, offset=)`` and ``sc(p_w, z_s,
    z_s2, rho, tau, similarity, p_cols=, z_cols=, offset=, normaliser=)``. ``auto``: the fused
    Triton kernels on CUDA when Triton imports, else the eager reference (config validation
    already refused ``triton`` without Triton). ``sc_grad=through`` takes the eager L_SC (the fused
    kernel has no gradient for the probabilities; config validation refuses it with ``triton``)."""
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
        sc = sc_loss_fused if sc_grad == "detach" else sc_through
        return partial(ms_loss_fused, deterministic=True if deterministic else None), sc
    return ms_loss, sc_reference if sc_grad == "detach" else sc_through


def sc_reference(p_w, z_s, z_s2, rho: float, tau: float, similarity: str = "cosine", p_cols=None, z_cols=None,
                 offset: int = 0, normaliser: int | None = None) -> torch.Tensor:
    """L_SC from the weak probabilities: ``label_similarity`` then ``sc_loss`` (the signature of
    the fused kernel)."""
    w_l = label_similarity(p_w, rho, similarity, p_cols=p_cols, offset=offset)
    return sc_loss(w_l, z_s, z_s2, tau, z_cols=z_cols, offset=offset, normaliser=normaliser)


def sc_through(p_w, z_s, z_s2, rho: float, tau: float, similarity: str = "cosine", p_cols=None, z_cols=None,
               offset: int = 0, normaliser: int | None = None) -> torch.Tensor:
    """L_SC with its gradient also through the weak probabilities (``loss.sc_grad=through``)."""
    w_l = label_similarity(p_w, rho, similarity, p_cols=p_cols, offset=offset, grad=True)
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
    """(B, C) detached weak-view probabilities (the label audit's evidence; the teacher's with an
    EMA teacher)."""
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    """Further (4,) counts summed over an epoch like ``selection`` (``pseudo``: pseudo-labelled,
    correct, unselected, known)."""
