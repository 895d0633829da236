"""The method registry and the selecting methods' parts: pseudo-label targets by hand, the EMA
update, the eval-pass selection on a toy set, L_SC's gradient through the weak probabilities,
the warm-up penalty, per-method recipe blocks, a method added in one place, and exact resume with
a teacher."""
import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lacol.config import ConfigError, load_config
from lacol.losses import StepOutput
from lacol.methods import METHODS, Method, build_method, parts
from lacol.methods.registry import register
from lacol.models import build_model
from lacol.train import train
from pipelines.batch import ViewBatch

from conftest import RECIPE, stopped_copy  # noqa: E402

SMALL = ["data.train_subset=1024", "data.val_size=256", "data.batch_size=64", "data.noise=symmetric",
         "data.noise_rate=0.4", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false"]


def _batch(b=16, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(b, 1, 28, 28, generator=g) for _ in range(3)]
    return ViewBatch(*views, torch.randint(0, c, (b,), generator=g), torch.arange(b))


def test_the_registry_holds_every_method_and_the_config_reads_it():
    assert {"ce", "ce_strong", "selection", "lacol", "lacol_semi"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name and set(cls.terms) <= {"ce", "ls", "pl", "ms", "sc"}
    assert METHODS["lacol"].selects and not METHODS["ce_strong"].selects
    with pytest.raises(ConfigError, match=r"loss.method='dividemix'.*'lacol_semi'"):
        load_config(None, ["loss.method=dividemix"])


def test_pseudo_label_targets_and_weights_by_hand():
    """Four samples, two selected: of the two unselected, the confident one (0.9 >= 0.8) trains on
    its predicted class; the class-balanced weight of a lone pseudo-label class is 1; the sum is
    divided by the two unselected samples."""
    cfg = load_config(None, ["loss.pseudo_threshold=0.8", "loss.method=selection"]).loss
    m = build_method(cfg, 3)
    p = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.5, 0.3, 0.2]])
    selected = torch.tensor([True, True, False, False])
    logits = torch.randn(4, 3)
    loss, _ = m.pseudo_label_loss(p, selected, logits, None, torch.arange(4))
    expect = F.cross_entropy(logits[2:3], torch.tensor([2]), reduction="sum") / 2
    assert float(loss) == pytest.approx(float(expect), rel=1e-6)
    # two pseudo-labels of class 0 and one of class 1: balanced weights 0.75 and 1.5 (mean 1)
    p2 = torch.tensor([[0.9, 0.1, 0.0], [0.95, 0.05, 0.0], [0.1, 0.9, 0.0]])
    logits2 = torch.randn(3, 3)
    loss2, _ = m.pseudo_label_loss(p2, torch.zeros(3, dtype=torch.bool), logits2, None, torch.arange(3))
    ce = F.cross_entropy(logits2, torch.tensor([0, 0, 1]), reduction="none")
    assert float(loss2) == pytest.approx(float((0.75 * ce[0] + 0.75 * ce[1] + 1.5 * ce[2]) / 3), rel=1e-6)
    m.clean = torch.tensor([0, 1, 1])  # statistics against clean labels: 2 of 3 pseudo-labels right
    _, stats = m.pseudo_label_loss(p2, torch.zeros(3, dtype=torch.bool), logits2, None, torch.arange(3))
    assert stats.tolist() == [3.0, 2.0, 3.0, 3.0]


def test_pseudo_labels_of_the_unselected_reach_the_loss_in_a_step():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1)
    b = _batch()
    off = build_method(load_config(None, ["loss.method=lacol"]).loss, 10)(model, b, epoch=5)
    on = build_method(load_config(None, ["loss.method=lacol", "loss.pseudo_threshold=0.01"]).loss, 10)(model, b, epoch=5)
    assert "pl" not in off.terms and float(on.terms["pl"]) > 0
    assert float(on.loss.detach()) == pytest.approx(float(off.loss.detach()) + float(on.terms["pl"]), rel=1e-5)


def test_ema_update_is_the_lerp_with_the_ramp():
    torch.manual_seed(0)
    student = build_model("small_cnn", 10, 1, width=4)
    teacher = parts.EmaTeacher(student, 0.9)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)  # step 0: d = min(0.9, 1/10) = 0.1
    for k, v in teacher.model.state_dict().items():
        s = student.state_dict()[k]
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.1 * before[k] + 0.9 * s)
        else:
            assert torch.equal(v, s)
    for _ in range(200):
        teacher.update(student)
    assert float(teacher.steps) == 201
    w = teacher.model.encoder.fc.weight
    torch.testing.assert_close(w, student.encoder.fc.weight, atol=1e-5, rtol=0)  # converged to a still student
    assert not w.requires_grad and not teacher.model.training


def test_gmm_selection_keeps_each_class_low_loss_mode():
    """A toy set: per class, 80 samples of loss ~0.1 and 20 of loss ~3 (another scale per class);
    the mixture keeps the low mode of each class, whatever the other classes' losses."""
    rng = np.random.default_rng(0)
    labels, loss, noisy = [], [], []
    for k, scale in enumerate((1.0, 0.3)):
        lo, hi = rng.normal(0.1, 0.03, 80) * scale, rng.normal(3.0, 0.3, 20) * scale
        loss += [*np.abs(lo), *hi]
        labels += [k] * 100
        noisy += [False] * 80 + [True] * 20
    labels, loss, noisy = np.array(labels), np.array(loss), np.array(noisy)
    probs = np.full((len(labels), 2), 0.0)
    probs[np.arange(len(labels)), labels] = np.exp(-loss)
    probs[np.arange(len(labels)), 1 - labels] = 1 - np.exp(-loss)
    keep = parts.gmm_selection(probs, labels, 2)
    assert keep[~noisy].all() and not keep[noisy].any()


def test_gmm_selection_of_an_epoch_comes_from_the_eval_pass():
    cfg = load_config(None, ["loss.method=selection", "loss.selection=gmm", "loss.warmup_epochs=1"]).loss
    m = build_method(cfg, 10, num_samples=32)
    calls = []

    def predict(model):  # two labels, 16 rows each; rows 20.. have a high loss
        calls.append(model)
        probs = np.full((32, 10), 0.01)
        labels = np.arange(32) % 2
        probs[np.arange(32), labels] = np.where(np.arange(32) < 20, 0.91, 0.01)
        return np.arange(32), probs, labels

    m.before_epoch(0, predict)  # warm-up: no pass
    assert not calls and m.train_mask is None
    m.before_epoch(1, predict)
    assert calls == [None]  # no teacher: the trained model
    assert m.train_mask[:20].all() and not m.train_mask[20:].any()
    torch.manual_seed(0)
    bb = _batch()
    out = m(build_model("small_cnn", 10, 1), ViewBatch(bb.weak, bb.strong, bb.strong2, torch.arange(16) % 10,
                                                       torch.arange(16, 32)), epoch=1)
    assert out.selected.tolist() == [i < 20 for i in range(16, 32)]


def test_sc_grad_through_reaches_the_classifier_and_detach_does_not():
    torch.manual_seed(0)
    b = _batch()
    grads = {}
    for mode in ("detach", "through"):
        torch.manual_seed(0)
        model = build_model("small_cnn", 10, 1)
        cfg = load_config(None, ["loss.lambda_ms=0", "loss.class_floor=0", f"loss.sc_grad={mode}"]).loss
        m = build_method(cfg, 10)
        g, = torch.autograd.grad(m.sc(*_sc_args(model, b, m)), model.encoder.fc.weight, allow_unused=True)
        grads[mode] = g
    assert grads["detach"] is None or float(grads["detach"].abs().sum()) == 0
    assert grads["through"] is not None and float(grads["through"].abs().sum()) > 0
    with pytest.raises(ConfigError, match="sc_grad=through.*kernel"):
        load_config(None, ["loss.sc_grad=through", "loss.kernel=triton"])


def _sc_args(model, b, m):
    (lw, _, _), z = m.forward_views(model, b, embed=True)
    z_w, z_s, z_s2 = z.split(len(b))
    return lw.softmax(1), z_s, z_s2, m.cfg.rho, m.cfg.tau, m.cfg.sc_similarity


def test_warmup_penalty_adds_the_negative_entropy():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1)
    b = _batch()
    plain = build_method(load_config(None, ["loss.warmup_epochs=2"]).loss, 10)(model, b, epoch=0)
    pen = build_method(load_config(None, ["loss.warmup_epochs=2", "loss.warmup_penalty=0.5"]).loss, 10)(model, b, epoch=0)
    with torch.no_grad():
        logp = model(b.weak, embed=False)[0].log_softmax(1)
    neg_entropy = float((logp.exp() * logp).sum(1).mean())
    assert float(pen.loss.detach()) == pytest.approx(float(plain.loss.detach()) + 0.5 * neg_entropy, rel=1e-5)
    assert float(pen.terms["penalty"]) == pytest.approx(neg_entropy, rel=1e-5)


def test_a_method_block_in_the_recipe_applies_whenever_that_method_runs(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        optim: {lr: 0.05}
        methods:
          ce_strong: {optim.lr: 0.1, optim.epochs: 30}
          lacol_semi: {loss.pseudo_threshold: 0.7}
        """))
    assert load_config(recipe, ["loss.method=ce_strong"]).optim.lr == 0.1
    assert load_config(recipe, ["loss.method=ce_strong", "optim.lr=0.2"]).optim.lr == 0.2  # the command line wins
    assert load_config(recipe, ["loss.method=lacol"]).optim.lr == 0.05
    semi = load_config(recipe, ["loss.method=lacol_semi"]).loss
    assert semi.pseudo_threshold == 0.7 and semi.ema_decay == METHODS["lacol_semi"].defaults["loss.ema_decay"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods:\n  dividemix: {optim.lr: 0.1}\n")
    with pytest.raises(ConfigError, match="methods.dividemix"):
        load_config(bad)


def test_noise_conventions_of_the_field():
    from pipelines.noise import asymmetric_map, symmetric_any

    target = asymmetric_map("fashion_mnist", 10, kind="asymmetric_cdr")
    assert {int(c): int(t) for c, t in enumerate(target) if t >= 0} == {0: 6, 2: 4, 5: 7, 7: 5}
    y = np.repeat(np.arange(10), 1000)
    noisy = symmetric_any(y, 0.5, 10, seed=0)
    assert abs((noisy != y).mean() - 0.45) < 0.02  # rate x (C-1)/C: a tenth of the draws keep the label
    with pytest.raises(Exception, match="asymmetric_cdr.*cifar10"):
        asymmetric_map("cifar10", 10, kind="asymmetric_cdr")


def test_a_method_added_in_one_place_trains(tmp_path):
    """One class and one registration: the config takes the name, the trainer runs it, its terms
    reach the history."""

    @register
    class Half(Method):
        name = "toy_half_ce"
        terms = ("ce",)
        uses_warmup = False

        def train_step(self, model, batch, epoch, step):
            out = self.warmup_step(model, batch, penalty=False)
            return StepOutput(out.loss * 0.5, {"ce": out.terms["ce"] * 0.5}, value=out.value * 0.5, p_weak=out.p_weak)

    try:
        summary = train(load_config(RECIPE, [*SMALL, "optim.epochs=1", "loss.method=toy_half_ce",
                                             f"train.out_dir={tmp_path}", "train.name=toy"]))
        hist = json.loads((tmp_path / "toy" / "history.json").read_text())
        assert summary["method"] == "toy_half_ce" and hist[0]["ce"] > 0
    finally:
        METHODS.pop("toy_half_ce")


def test_resume_with_a_teacher_and_the_eval_pass_is_exact(tmp_path):
    """lacol_semi with the GMM selection: stopped inside epoch 2 (teacher, mask and pseudo-label
    counts in the checkpoint) and resumed, it ends with the uninterrupted run's weights, teacher
    and history."""
    common = [*SMALL, "optim.epochs=3", "loss.method=lacol_semi", "loss.selection=gmm", "loss.pseudo_threshold=0.5",
              "loss.ema_eval=true", "train.checkpoint_every=6", "train.keep_checkpoints=100", f"train.out_dir={tmp_path}"]
    train(load_config(RECIPE, [*common, "train.name=whole"]))
    stopped_copy(tmp_path / "whole", tmp_path / "split", 40)  # epoch 2 is steps 33..48: resume from step 36
    train(load_config(RECIPE, [*common, "train.name=split"]), resume=True)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ck = load_file(str(sorted((tmp_path / "whole" / "checkpoints").glob("step_*"))[-1] / "extra.safetensors"))
    assert any(k.startswith("method.ema.") for k in ck) and "method.train_mask" in ck
    timing = {"seconds", "samples_per_s"}
    h = [json.loads((tmp_path / r / "history.json").read_text()) for r in ("whole", "split")]
    assert [{k: v for k, v in r.items() if k not in timing} for r in h[0]] == \
           [{k: v for k, v in r.items() if k not in timing} for r in h[1]]
    assert h[0][-1]["pseudo_rate"] > 0 and 0 < h[0][-1]["pass_selected_rate"] < 1


def test_bench_step_methods_adds_the_eval_pass_to_the_epoch_of_a_method_that_makes_one(capsys):
    """``lacol-bench step --methods ... --recipe R --epoch-rows N``: the methods get the recipe's
    settings (lacol_semi its loss-mixture selection), and only a method that passes over the
    training split before an epoch is charged that pass."""
    from tools.bench import main as bench
    from tools.bench_step import pass_seconds, _step

    assert bench(["step", "--arch", "small_cnn", "--size", "28", "--batch-size", "16", "--dtype", "fp32",
                  "--methods", "lacol,lacol_semi", "--recipe", str(RECIPE), "--epoch-rows", "64", "--steps", "1",
                  "--warmup", "1", "--rounds", "1", "--eval-batch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "made by lacol_semi)" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and " s;" in ln}
    assert "the pass" in lines["lacol_semi"] and "the pass" not in lines["lacol"]
    run_step, _ = _step("small_cnn", 28, 16, "cpu", dtype="fp32", compile=False, classes=10, kernel="torch",
                        method="lacol_semi", recipe=RECIPE)
    assert run_step.method.cfg.selection == "gmm"
    assert pass_seconds(run_step.model, 64, 28, 32, "cpu", repeats=1) > 0
    assert run_step.model.training  # the pass leaves the model as it found it
