"""The fused Triton kernels against the eager reference (lacol/losses.py), on the CPU through
Triton's interpreter (TRITON_INTERPRET=1); on a GPU the same checks run on CUDA."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

if "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
pytest.importorskip("triton")

from lacol.kernels import ms as ms_kernels  # noqa: E402
from lacol.kernels.ms import ms_loss_fused, reverse_index  # noqa: E402
from lacol.kernels import sc as sc_kernels  # noqa: E402
from lacol.kernels.sc import sc_loss_fused  # noqa: E402
from lacol.losses import label_similarity, ms_loss, sample_negatives, sc_loss  # noqa: E402
from tools.aot import FORCED  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton was imported without TRITON_INTERPRET=1 and there is no GPU", allow_module_level=True)


def _close(out, ref, grads, ref_grads):
    assert torch.isfinite(out) and abs(out.item() - ref.item()) <= 1e-5 * max(abs(ref.item()), 1e-6)
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max() <= 1e-4 * max(r.abs().max().item(), 1e-6)


def _ms_case(b=24, n=40, d=32, k=15, offset=8, classes=4, seed=0, zero_rows=True, dup=True):
    gen = torch.Generator().manual_seed(seed)
    z_w = torch.randn(b, d, generator=gen)
    z_s = torch.randn(n, d, generator=gen)
    if zero_rows:
        z_w[3] = 0
        z_s[offset + 5] = 0  # the positive of anchor 5
    labels = torch.randint(0, classes, (n,), generator=gen)
    neg, valid = sample_negatives(labels, k, gen)
    neg, valid = neg[offset:offset + b], valid[offset:offset + b]
    if dup:
        neg[0, 1:4] = neg[0, 0]  # duplicate negative indices
    return z_w.to(DEV).requires_grad_(), z_s.to(DEV).requires_grad_(), neg.to(DEV), valid.to(DEV), offset


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("case", [{}, {"classes": 2, "k": 30}, {"offset": 0, "n": 24, "zero_rows": False},
                                  {"classes": 1}])  # one class: no valid negatives anywhere
def test_ms_kernel_matches_reference(case, deterministic):
    _ms_matches(case, deterministic)


@pytest.mark.parametrize("config", FORCED["ms"], ids=str)  # 5 anchors leave a tail program over 24
@pytest.mark.parametrize("deterministic", [True, False])
def test_ms_kernel_launch_shapes(config, deterministic, monkeypatch):
    monkeypatch.setattr(ms_kernels, "FORCE", config)
    _ms_matches({}, deterministic)


def _ms_matches(case, deterministic):
    z_w, z_s, neg, valid, offset = _ms_case(**case)
    ref = ms_loss(F.normalize(z_w, dim=1), F.normalize(z_s, dim=1), neg, valid, 0.2, offset=offset)
    ref_grads = torch.autograd.grad(ref, (z_w, z_s))
    out = ms_loss_fused(z_w, z_s, neg, valid, 0.2, offset=offset, deterministic=deterministic)
    _close(out, ref, torch.autograd.grad(out, (z_w, z_s)), ref_grads)


def test_ms_deterministic_path_is_bitwise_reproducible():
    z_w, z_s, neg, valid, offset = _ms_case(b=32, n=64, classes=2)
    runs = []
    for _ in range(3):
        out = ms_loss_fused(z_w, z_s, neg, valid, 0.2, offset=offset, deterministic=True)
        runs.append((out.detach(), *torch.autograd.grad(out, (z_w, z_s))))
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_reverse_index_lists_every_reference_once():
    neg = torch.tensor([[2, 2], [0, 3]])
    start, anchor, pos = reverse_index(neg, rows=5, offset=1)
    # row r's references: anchor i (positive) if r == i + 1, and each (i, k) with neg[i, k] == r
    assert start.tolist() == [0, 1, 2, 5, 6, 6]
    assert anchor.tolist() == [1, 0, 0, 0, 1, 1] and pos.tolist() == [0, 1, 0, 0, 1, 0]


def _sc_case(b=20, n=37, c=10, d=24, offset=5, seed=0, same_cols=False, one_class=False):
    gen = torch.Generator().manual_seed(seed)
    p = F.softmax(3 * torch.randn(n, c, generator=gen), 1)
    if one_class:
        p[:] = F.one_hot(torch.zeros(n, dtype=torch.long), c).float()
    z_cols = F.normalize(torch.randn(n, d, generator=gen), dim=1)
    z_s2 = F.normalize(torch.randn(b, d, generator=gen), dim=1).to(DEV).requires_grad_()
    if same_cols:
        z_s = z_cols[:b].clone().to(DEV).requires_grad_()
        return p[:b].to(DEV), None, z_s, z_s2, None, 0
    z_s = z_cols[offset:offset + b].clone().to(DEV).requires_grad_()
    return p[offset:offset + b].to(DEV), p.to(DEV), z_s, z_s2, z_cols.to(DEV).requires_grad_(), offset


# rho 1.0: every row zero but its diagonal; 0.0: nothing thresholded
@pytest.mark.parametrize("kind,rho", [("cosine", 0.8), ("cosine", 0.0), ("cosine", 1.0), ("dot", 0.5), ("dot", 0.0)])
@pytest.mark.parametrize("case", [{}, {"same_cols": True}, {"one_class": True}, {"b": 33, "n": 70, "d": 128}])
def test_sc_kernel_matches_reference(case, rho, kind):
    p, p_cols, z_s, z_s2, z_cols, offset = _sc_case(**case)
    n = (z_cols if z_cols is not None else z_s).shape[0]
    inputs = [t for t in (z_s, z_s2, z_cols) if t is not None]
    w = label_similarity(p, rho, kind, p_cols=p_cols, offset=offset)
    ref = sc_loss(w, z_s, z_s2, 0.2, z_cols=z_cols, offset=offset, normaliser=n)
    ref_grads = torch.autograd.grad(ref, inputs)
    out = sc_loss_fused(p, z_s, z_s2, rho, 0.2, kind, p_cols=p_cols, z_cols=z_cols, offset=offset, normaliser=n)
    _close(out, ref, torch.autograd.grad(out, inputs), ref_grads)


@pytest.mark.parametrize("config", FORCED["sc"], ids=str)
def test_sc_kernel_tile_shapes(config, monkeypatch):
    """Tile shapes of the tuner, each forced, over several row and column tiles and ragged edges
    (each fits an A100's and an H100's shared memory: tests/test_aot.py compiles them)."""
    monkeypatch.setattr(sc_kernels, "FORCE", config)
    p, p_cols, z_s, z_s2, z_cols, offset = _sc_case(b=150, n=290, c=14, d=128, offset=70)
    inputs = (z_s, z_s2, z_cols)
    ref = sc_loss(label_similarity(p, 0.8, p_cols=p_cols, offset=offset), z_s, z_s2, 0.2, z_cols=z_cols,
                  offset=offset, normaliser=290)
    out = sc_loss_fused(p, z_s, z_s2, 0.8, 0.2, p_cols=p_cols, z_cols=z_cols, offset=offset, normaliser=290)
    _close(out, ref, torch.autograd.grad(out, inputs), torch.autograd.grad(ref, inputs))


def test_sc_bf16_embeddings():
    """bf16 embeddings (tensor-core products on a GPU): loss within 1e-2 relative of the fp32
    reference of the same rounded inputs, gradients within 2e-2 of the largest."""
    p, p_cols, z_s, z_s2, z_cols, offset = _sc_case(b=40, n=80, d=64)
    z16 = [t.detach().bfloat16().requires_grad_() for t in (z_s, z_s2, z_cols)]
    z32 = [t.detach().float().requires_grad_() for t in z16]
    ref = sc_loss(label_similarity(p, 0.8, p_cols=p_cols, offset=offset), z32[0], z32[1], 0.2, z_cols=z32[2],
                  offset=offset, normaliser=80)
    out = sc_loss_fused(p, *z16[:2], 0.8, 0.2, p_cols=p_cols, z_cols=z16[2], offset=offset, normaliser=80)
    assert abs(out.item() - ref.item()) <= 1e-2 * abs(ref.item())
    for g, r in zip(torch.autograd.grad(out, z16), torch.autograd.grad(ref, z32)):
        assert g.dtype == torch.bfloat16 and (g.float() - r).abs().max() <= 2e-2 * r.abs().max()


def test_sc_kernel_is_bitwise_reproducible():
    p, p_cols, z_s, z_s2, z_cols, offset = _sc_case(b=40, n=80)
    runs = []
    for _ in range(2):
        out = sc_loss_fused(p, z_s, z_s2, 0.8, 0.2, p_cols=p_cols, z_cols=z_cols, offset=offset)
        runs.append((out.detach(), *torch.autograd.grad(out, (z_s, z_s2, z_cols))))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_bf16_inputs_accumulate_in_fp32():
    z_w, z_s, neg, valid, offset = _ms_case(zero_rows=False)
    zw16, zs16 = z_w.detach().bfloat16().requires_grad_(), z_s.detach().bfloat16().requires_grad_()
    ref = ms_loss(F.normalize(zw16.float(), dim=1), F.normalize(zs16.float(), dim=1), neg, valid, 0.2, offset=offset)
    out = ms_loss_fused(zw16, zs16, neg, valid, 0.2, offset=offset)
    assert abs(out.item() - ref.item()) < 1e-5 * abs(ref.item())
    gw, gs = torch.autograd.grad(out, (zw16, zs16))
    assert gw.dtype == torch.bfloat16 and gs.dtype == torch.bfloat16 and torch.isfinite(gw.float()).all()


def test_method_dispatches_to_the_kernels():
    """loss.kernel=triton gives the reference's loss terms and gradients in a LaCoL step."""
    from lacol.config import LossConfig
    from lacol.methods import build_method
    from lacol.models import build_model
    from pipelines.batch import ViewBatch

    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, width=8).to(DEV)
    b = 32
    views = [torch.randn(b, 1, 28, 28, device=DEV).contiguous(memory_format=torch.channels_last) for _ in range(3)]
    batch = ViewBatch(*views, torch.randint(0, 10, (b,), device=DEV), torch.arange(b, device=DEV))
    results = []
    for kernel in ("torch", "triton"):
        model.zero_grad()
        out = build_method(LossConfig(warmup_epochs=0, kernel=kernel), 10, device=DEV)(model, batch, epoch=0)
        out.loss.backward()
        results.append((out.terms, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (ta, ga), (tb, gb) = results
    for key in ("ls", "ms", "sc"):
        assert abs(ta[key].item() - tb[key].item()) <= 1e-5 * abs(ta[key].item())
    for u, v in zip(ga, gb):
        assert (u - v).abs().max() <= 1e-4 * max(u.abs().max().item(), 1e-8)


def test_bench_kernel_runs(capsys):
    from tools.bench import main as bench

    assert bench(["kernel", "--ms-sizes", "64", "--sc-sizes", "64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "L_MS" in out and "L_SC" in out
