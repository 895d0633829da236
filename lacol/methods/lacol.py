"""``lacol``: LaCoL (CVPR 2022): L_LS on the selected samples, plus the metric-space terms L_MS
(negative pairs of another noisy label) and L_SC (cross-space similarity consistency)."""
from __future__ import annotations

import torch

from ..losses import sample_negatives
from .base import SelectingMethod
from .registry import register


@register
class LaCoL(SelectingMethod):
    name = "lacol"
    colour = "tab:red"
    terms = ("ls", "pl", "ms", "sc")
    metric = True

    def metric_terms(self, loss, terms, z, b, y_all, logits_w, p_w, p_all, offset, epoch, step, gather):
        c, d = self.cfg, self.dist
        world = float(d.world)
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
            if c.sc_grad == "through":  # the paper's Figure 3: L_SC also trains the classifier
                p, cols = logits_w.softmax(1), None
                if gather:
                    cols = d.all_gather(p, grad=True)
            else:
                p, cols = p_w, p_all
            l_sc = world * self.sc(p, z_s, z_s2, c.rho, c.tau, c.sc_similarity, p_cols=cols, z_cols=z_all,
                                   offset=offset, normaliser=b * d.world)
            loss = loss + c.lambda_sc * l_sc
            terms["sc"] = l_sc
        return loss, terms
