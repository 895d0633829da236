"""LaCoL's losses (the eager reference) and the method object the trainer calls.

Notation as in DESIGN.md: p_w weak-view probabilities, z_w / z_s / z_s2 L2-normalised embeddings
of the weak and the two strong views, y the noisy labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .config import LossConfig
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

    ``paper``: mu_k = eps_k / sum_j eps_j, as printed. ``balanced``: inverse frequency over the
    classes that have selected samples, scaled so the mean weight *per selected sample* is 1.
    ``none``: 1."""
    counts = counts.float()
    if rule == "none":
        return torch.ones_like(counts)
    total = counts.sum()
    if rule == "paper":
        return counts / total.clamp_min(1)
    if rule == "balanced":
        present = (counts > 0).sum().clamp_min(1)
        return torch.where(counts > 0, total / (present * counts.clamp_min(1)), torch.zeros_like(counts))
    raise ValueError(f"loss.class_weight={rule!r}: choose paper, balanced or none")


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
                normaliser: torch.Tensor | None = None) -> torch.Tensor:
    """L_LS: sum over masked samples of mu[y] * CE, divided by the number masked (or by
    ``normaliser``, the global count when several processes share a batch)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    w = mu[labels] * mask.float()
    n = mask.sum() if normaliser is None else normaliser
    return (w * ce).sum() / n.clamp_min(1)


def sample_negatives(labels: torch.Tensor, k: int, generator: torch.Generator | None = None):
    """K in-batch negatives per anchor, each with a different noisy label.

    Without replacement when an anchor has >= K candidates, with replacement when it has fewer;
    ``valid`` is False for anchors with none (they are skipped). Returns (idx (B, K), valid (B,))."""
    b = labels.shape[0]
    scores = torch.rand(b, b, device=labels.device, generator=generator)
    same = labels[:, None] == labels[None, :]
    scores = scores.masked_fill(same, -1.0)  # candidates first, in random order
    order = scores.argsort(dim=1, descending=True)
    count = (~same).sum(1)
    u = torch.rand(b, k, device=labels.device, generator=generator)
    with_repl = (u * count[:, None]).long().clamp_max((count[:, None] - 1).clamp_min(0))
    pos = torch.where(count[:, None] >= k, torch.arange(k, device=labels.device).expand(b, k), with_repl)
    return order.gather(1, pos), count > 0


def ms_loss(z_w: torch.Tensor, z_s: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor,
            tau: float, normaliser: torch.Tensor | None = None) -> torch.Tensor:
    """L_MS: per anchor, InfoNCE of the positive <z_w_i, z_s_i> against <z_w_i, z_s_j> for its
    negatives j (positive in the denominator), mean over valid anchors. ``z_s`` may hold more
    rows than ``z_w`` (a gathered global batch); ``neg`` indexes its rows."""
    pos = (z_w * z_s[: z_w.shape[0]]).sum(1, keepdim=True)
    negs = torch.einsum("bd,bkd->bk", z_w, z_s[neg])
    logits = torch.cat([pos, negs], 1) / tau
    per_anchor = torch.logsumexp(logits, 1) - logits[:, 0]
    n = valid.sum() if normaliser is None else normaliser
    return (per_anchor * valid.float()).sum() / n.clamp_min(1)


def label_similarity(p: torch.Tensor, rho: float, kind: str = "cosine") -> torch.Tensor:
    """W_l: similarity of weak probabilities (cosine, or dot as in CoMatch), diagonal 1, entries
    below rho zeroed, rows normalised. No gradient."""
    p = p.detach().float()
    q = F.normalize(p, dim=1) if kind == "cosine" else p
    w = q @ q.T
    w.fill_diagonal_(1.0)
    w = w * (w >= rho)
    return w / w.sum(1, keepdim=True)


def sc_loss(w_label: torch.Tensor, z_s: torch.Tensor, z_s2: torch.Tensor, tau: float) -> torch.Tensor:
    """L_SC: mean over rows of CE(W_l[i], softmax(S[i])), S_ij = <z_s_i, z_s_j>/tau off the
    diagonal and <z_s_i, z_s2_i>/tau on it."""
    s = z_s @ z_s.T
    s = s - torch.diag_embed(s.diagonal()) + torch.diag_embed((z_s * z_s2).sum(1))
    logp = F.log_softmax(s / tau, dim=1)
    return -(w_label * logp).sum(1).mean()


@dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    selected: torch.Tensor | None = None
    """(B,) bool: the samples L_LS trained on (None in warm-up and for CE)."""
    class_counts: torch.Tensor | None = None


class Method:
    """LaCoL (or the CE baseline) as one call: ``method(model, batch, epoch, generator)``.

    ``all_reduce`` sums a tensor over processes (identity on one process): the selected counts
    behind the class weights are global."""

    def __init__(self, cfg: LossConfig, num_classes: int,
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t):
        self.cfg, self.num_classes, self.all_reduce = cfg, num_classes, all_reduce

    def needs_strong(self, epoch: int) -> bool:
        return self.cfg.method == "lacol" and epoch >= self.cfg.warmup_epochs

    def __call__(self, model, batch, epoch: int, generator: torch.Generator | None = None) -> StepOutput:
        c = self.cfg
        if not self.needs_strong(epoch):
            set_views(model, c.bn_stats, None)
            logits, _ = model(batch.weak, embed=False)
            loss = F.cross_entropy(logits.float(), batch.label)
            return StepOutput(loss, {"ce": loss.detach()})
        b, y = len(batch), batch.label
        set_views(model, c.bn_stats, b)
        logits, z = model(torch.cat([batch.weak, batch.strong, batch.strong2]))
        set_views(model, c.bn_stats, None)
        logits_w, logits_s, _ = logits.float().split(b)
        z_w, z_s, z_s2 = z.split(b)
        p_w = logits_w.detach().softmax(1)

        selected = select(p_w, y, c.class_floor)
        counts = self.all_reduce(torch.bincount(y[selected], minlength=self.num_classes).float())
        mu = class_weights(counts, c.class_weight)
        train_logits = logits_s if c.train_view == "strong" else logits_w
        l_ls = weighted_ce(train_logits, y, selected, mu)
        terms = {"ls": l_ls.detach()}
        loss = l_ls
        if c.lambda_ms > 0:
            neg, valid = sample_negatives(y, c.num_negatives, generator)
            l_ms = ms_loss(z_w, z_s, neg, valid, c.tau)
            loss = loss + c.lambda_ms * l_ms
            terms["ms"] = l_ms.detach()
        if c.lambda_sc > 0:
            l_sc = sc_loss(label_similarity(p_w, c.rho, c.sc_similarity), z_s, z_s2, c.tau)
            loss = loss + c.lambda_sc * l_sc
            terms["sc"] = l_sc.detach()
        return StepOutput(loss, terms, selected, counts)
