"""Each LaCoL loss against a value computed by hand (plain Python loops over a tiny batch)."""
import math

import pytest
import torch
import torch.nn.functional as F

from lacol.config import LossConfig
from lacol.methods import build_method
from lacol.losses import (class_weights, label_similarity, ms_loss, sample_negatives, sc_loss,
                          select, weighted_ce)
from lacol.models import build_model
from pipelines.batch import ViewBatch


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_selection_and_class_weights_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    y = torch.tensor([0, 0, 2, 0])
    assert select(p, y).tolist() == [True, False, True, True]
    counts = torch.tensor([2.0, 0.0, 1.0])  # selected: two of class 0, one of class 2
    assert class_weights(counts, "paper").tolist() == pytest.approx([2 / 3, 0, 1 / 3])
    # balanced: total / (classes present * count): 3 / (2 * 2) and 3 / (2 * 1); mean per sample 1
    assert class_weights(counts, "balanced").tolist() == pytest.approx([0.75, 0.0, 1.5])
    assert class_weights(counts, "none").tolist() == [1.0, 1.0, 1.0]


def test_weighted_ce_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 0, 2])
    mask = torch.tensor([True, False, True])
    mu = torch.tensor([0.75, 0.0, 1.5])

    def ce(row, k):
        return -row[k] + math.log(sum(math.exp(v) for v in row))

    expected = (0.75 * ce([2.0, 0, 0], 0) + 1.5 * ce([0, 0, 3.0], 2)) / 2
    assert float(weighted_ce(logits, y, mask, mu)) == pytest.approx(expected, rel=1e-6)


def test_ms_loss_by_hand():
    z_w = unit([1, 0], [0, 1], [1, 1])
    z_s = unit([1, 0.2], [0.1, 1], [1, 0.5])
    neg = torch.tensor([[1, 2], [0, 0], [0, 1]])
    valid = torch.tensor([True, True, False])  # the third anchor is skipped
    tau = 0.2

    def dot(a, b):
        return float((a * b).sum())

    total = 0.0
    for i in range(2):
        pos = math.exp(dot(z_w[i], z_s[i]) / tau)
        den = pos + sum(math.exp(dot(z_w[i], z_s[j]) / tau) for j in neg[i].tolist())
        total += -math.log(pos / den)
    assert float(ms_loss(z_w, z_s, neg, valid, tau)) == pytest.approx(total / 2, rel=1e-5)


def test_label_similarity_and_sc_loss_by_hand():
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    rho, tau = 0.8, 0.2
    w = label_similarity(p, rho, "cosine")
    q = [[v / math.hypot(*r) for v in r] for r in p.tolist()]
    raw = [[1.0 if i == j else sum(a * b for a, b in zip(q[i], q[j])) for j in range(3)] for i in range(3)]
    raw = [[v if v >= rho else 0.0 for v in r] for r in raw]
    expected_w = [[v / sum(r) for v in r] for r in raw]
    assert w.tolist() == [pytest.approx(r, rel=1e-5) for r in expected_w]
    assert w[2].tolist() == pytest.approx([0, 0, 1])  # only the diagonal survives rho in row 2
    dot = label_similarity(p, 0.5, "dot")  # CoMatch's dot product: 0.9*0.8+0.1*0.2 = 0.74 survives 0.5
    assert float(dot[0, 1]) == pytest.approx(0.74 / 1.74, rel=1e-5)

    z_s = unit([1, 0], [0.6, 0.8], [0, 1])
    z_s2 = unit([0.8, 0.6], [0.6, 0.8], [0.1, 1])
    total = 0.0
    for i in range(3):
        s = [float(z_s[i] @ z_s[j]) / tau if i != j else float(z_s[i] @ z_s2[i]) / tau for j in range(3)]
        lse = math.log(sum(math.exp(v) for v in s))
        total += -sum(expected_w[i][j] * (s[j] - lse) for j in range(3))
    assert float(sc_loss(w, z_s, z_s2, tau)) == pytest.approx(total / 3, rel=1e-5)


def test_negatives_never_share_the_anchor_label():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        y = torch.randint(0, 4, (64,), generator=g)
        neg, valid = sample_negatives(y, 15, g)
        assert valid.all()
        assert not (y[neg] == y[:, None]).any()
        # >= K candidates: drawn without replacement
        assert all(len(set(r)) == 15 for r in neg.tolist())


def test_negatives_are_a_uniform_subset_of_the_other_labels():
    """Chi-square over the two-element subsets of an anchor's candidates, 6,000 draws: uniform at
    the 0.1% level (10 subsets: df 9, 27.88; 6 subsets: df 5, 20.52)."""
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    g = torch.Generator().manual_seed(0)
    draws = 6_000
    counts: list[dict] = [{}, {}]
    for _ in range(draws):
        neg, valid = sample_negatives(y, 2, g)
        assert valid.all()
        for c, anchor in zip(counts, (0, 2)):
            key = tuple(sorted(neg[anchor].tolist()))
            c[key] = c.get(key, 0) + 1
    for c, candidates in zip(counts, ([2, 3, 4, 5, 6], [0, 1, 5, 6])):
        subsets = [(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1:]]
        assert set(c) <= set(subsets)
        expected = draws / len(subsets)
        chi2 = sum((c.get(s, 0) - expected) ** 2 / expected for s in subsets)
        assert chi2 < {10: 27.88, 6: 20.52}[len(subsets)], (chi2, c)


def test_negatives_are_the_same_on_every_device_and_call_with_one_seed():
    y = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(3))
    a = sample_negatives(y, 15, torch.Generator().manual_seed(9))
    b = sample_negatives(y, 15, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_negatives_with_replacement_and_skipped_anchors():
    y = torch.tensor([0, 0, 0, 0, 0, 1, 2])  # anchors of class 0 have 2 candidates, K = 5
    neg, valid = sample_negatives(y, 5, torch.Generator().manual_seed(1))
    assert valid.all()
    for i in range(5):
        assert set(neg[i].tolist()) <= {5, 6}
    assert set(neg[5].tolist()) <= {0, 1, 2, 3, 4, 6} and len(set(neg[5].tolist())) == 5
    same = torch.zeros(6, dtype=torch.long)  # all one label: every anchor skipped
    _, valid = sample_negatives(same, 3)
    assert not valid.any()
    z = unit(*[[1.0, float(i)] for i in range(6)])
    assert float(ms_loss(z, z, torch.zeros(6, 3, dtype=torch.long), valid, 0.2)) == 0.0


def test_total_loss_is_the_weighted_sum_and_bf16_grads_are_finite():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, width=8)
    b = 32
    views = [torch.randn(b, 1, 28, 28).contiguous(memory_format=torch.channels_last) for _ in range(3)]
    batch = ViewBatch(*views, torch.randint(0, 10, (b,)), torch.arange(b))
    cfg = LossConfig(warmup_epochs=0)
    out = build_method(cfg, 10)(model, batch, epoch=0)
    t = out.terms
    assert float(out.loss.detach()) == pytest.approx(float(t["ls"] + cfg.lambda_ms * t["ms"] + cfg.lambda_sc * t["sc"]), rel=1e-6)
    assert out.selected is not None and out.class_counts.sum() == out.selected.sum()

    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = build_method(cfg, 10)(model, batch, epoch=0)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_warmup_and_ce_use_the_weak_view_only():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, width=8)
    weak = torch.randn(8, 1, 28, 28)
    batch = ViewBatch(weak, None, None, torch.randint(0, 10, (8,)), torch.arange(8))
    out = build_method(LossConfig(warmup_epochs=2), 10)(model, batch, epoch=1)
    assert set(out.terms) == {"ce"} and out.selected is None
    expected = F.cross_entropy(model(weak, embed=False)[0], batch.label)
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert not build_method(LossConfig(method="ce", warmup_epochs=0), 10).needs_strong(5)


def test_ms_loss_gradients_are_repeatable_with_several_threads():
    """z_s[neg]'s backward (index_put_ with accumulate) differed run to run on 2 CPU threads;
    index_select's does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(0)
        z_w = F.normalize(torch.randn(64, 128, generator=gen), dim=1).requires_grad_()
        z_s = F.normalize(torch.randn(64, 128, generator=gen), dim=1).requires_grad_()
        neg, valid = sample_negatives(torch.randint(0, 10, (64,), generator=gen), 15, gen)
        grads = [torch.autograd.grad(ms_loss(z_w, z_s, neg, valid, 0.2), (z_w, z_s)) for _ in range(8)]
        assert all(torch.equal(a, b) for g in grads[1:] for a, b in zip(grads[0], g))
    finally:
        torch.set_num_threads(threads)
