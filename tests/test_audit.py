"""The label audit: recording by index, the window's flags and scores checked by hand, the file
written without pickle, and `lacol audit` on a real run."""
import csv

import numpy as np
import pytest
import torch

from lacol import audit
from lacol.cli import main as lacol


def _record(first=2, epochs=4, n=5):
    ev = audit.Evidence(n, first, epochs, "cpu")
    # 3 classes; rows 0..4 labelled [0, 1, 2, 0, 1]; clean labels [0, 1, 1, 2, 1]: rows 2 and 3 wrong
    labels = torch.tensor([0, 1, 2, 0, 1])
    for e in range(first, first + epochs):
        p = torch.tensor([[0.9, 0.05, 0.05],     # row 0: right and believed
                          [0.2, 0.7, 0.1],       # row 1: right and believed
                          [0.1, 0.8, 0.1],       # row 2: wrong, predicted 1 (its clean class)
                          [0.3, 0.1, 0.6] if e < first + 3 else [0.6, 0.1, 0.3],  # row 3: predicted 2, then 0
                          [0.5, 0.4, 0.1]])      # row 4: right but predicted 0 every epoch
        order = torch.tensor([4, 1, 3, 0, 2])  # rows arrive in any order, in two batches
        for part in (order[:2], order[2:]):
            ev.record(e, part, p[part], labels[part], None)
    ev.record(first + epochs, torch.tensor([0]), torch.ones(1, 3) / 3, labels[:1], None)  # past the end: ignored
    return ev, labels


def test_flags_scores_and_suggestions_by_hand(tmp_path):
    ev, labels = _record()
    tensors = ev.combined(world=1)
    assert (tensors["audit.code"] >= 0).all()
    clean = np.array([0, 1, 1, 2, 1])
    audit.write(tmp_path / "audit.npz", tensors, first=ev.first, labels=labels.numpy(), clean=clean,
                rows=np.arange(100, 105), method="lacol", classes=["a", "b", "c"])
    rec = audit.load(tmp_path / "audit.npz")  # np.load with allow_pickle=False: no object arrays
    a = audit.analyse(rec)
    assert list(a.window) == [4, 5]  # the last half of epochs 2..5
    # window epochs 4, 5: row 3 predicted 2 then 0 -> disagrees in 1 of 2 epochs: not a majority
    assert a.flagged.tolist() == [False, False, True, False, True]
    assert a.suggested.tolist()[:3] == [0, 1, 1]
    np.testing.assert_allclose(a.score, [0.1, 0.3, 0.9, 1 - (0.3 + 0.6) / 2, 0.6], atol=1e-3)  # float16 on disk
    d = audit.detection(a.flagged, a.score, a.labels, a.clean)
    # flagged rows 2 (wrong) and 4 (right): precision 1/2; wrong rows 2, 3: recall 1/2
    assert (d["precision"], d["recall"], d["mislabelled"]) == (0.5, 0.5, 2)
    assert d["precision_top1pct"] == 1.0  # the top row by score is row 2
    assert audit.pairs(a) == [("c", "b", 1), ("b", "a", 1)]


def test_resumed_record_continues(tmp_path):
    ev, _ = _record()
    again = audit.Evidence(5, 2, 4, "cpu")
    again.load(ev.combined(world=1))
    assert torch.equal(again.prob, ev.prob) and torch.equal(again.code, ev.code)
    with pytest.raises(ValueError, match="shape"):
        audit.Evidence(6, 2, 4, "cpu").load(ev.combined(world=1))


def test_missing_record_names_the_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert lacol(["audit", "--run", str(tmp_path / "run")]) == 2
    assert "audit.npz: no audit record" in capsys.readouterr().err


def test_lacol_audit_of_a_short_run_finds_the_noise_and_lacol_plot_draws_it(tmp_path, capsys):
    from lacol.config import load_config
    from lacol.train import train

    cfg = load_config(None, ["data.train_subset=2048", "data.batch_size=64", "data.noise=symmetric",
                             "data.noise_rate=0.4", "data.pad=0", "data.flip=false", "loss.class_floor=0.3",
                             "optim.epochs=4", "loss.warmup_epochs=2", "train.threads=1", "train.progress=false",
                             f"train.out_dir={tmp_path}", "train.name=r"])
    train(cfg)
    capsys.readouterr()
    out, png = tmp_path / "flags.csv", tmp_path / "scores.png"
    assert lacol(["audit", "--run", str(tmp_path / "r"), "--top", "3", "--out", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "most suspect labels" in printed and "F1" in printed
    rows = list(csv.DictReader(out.open()))
    assert rows and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # symmetric 40% after 4 epochs: most flags are truly wrong labels (chance would be 40%)
    wrong = sum(r["given"] != r["clean"] for r in rows)
    assert wrong / len(rows) > 0.7, (wrong, len(rows))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = tmp_path / "curves.png"
    assert lacol(["plot", str(tmp_path / "r"), "--out", str(curves)]) == 0
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and curves.stat().st_size > 20_000
    assert lacol(["plot", str(tmp_path / "nothing"), "--out", str(curves)]) == 2  # names the missing file


def test_bench_audit_beside_cleanlab_on_folds(tmp_path, capsys):
    """`lacol-bench audit` end to end on a small case: one LaCoL run, two CE folds whose held-out
    rows partition the training rows, cleanlab on their probabilities, both scored."""
    import json

    from tools.bench import main as bench

    out = tmp_path / "r.json"
    assert bench(["audit", "--noise", "symmetric", "--folds", "2", "--jobs", "1", "--out-dir", str(tmp_path),
                  "--out", str(out), "data.train_subset=1024", "optim.epochs=3", "loss.warmup_epochs=2"]) == 0
    r = json.loads(out.read_text())["symmetric"]
    held = [np.load(tmp_path / f"audit-symmetric-cv{k}" / "heldout_probs.npz")["rows"] for k in (0, 1)]
    assert len(np.intersect1d(*held)) == 0 and len(held[0]) + len(held[1]) == 1024
    for arm in ("lacol", "cleanlab"):
        assert r[arm]["mislabelled"] > 300 and 0 < r[arm]["flagged"] <= 1024
        assert 0 <= r[arm]["f1"] <= 1 and r[arm]["train_seconds"] > 0
    assert (r["lacol"]["runs"], r["cleanlab"]["runs"]) == (1, 2)
    assert "cleanlab" in capsys.readouterr().out


def test_bench_step_times_the_recording_side_by_side(capsys):
    """``lacol-bench step --audit ROWS``: the same step without and with recording; the
    recording really writes the batch's rows."""
    from tools.bench import main as bench
    from tools.bench_step import _step

    run_step, evidence = _step("small_cnn", 28, 16, "cpu", dtype="fp32", compile=False, classes=10, kernel="torch",
                               audit_rows=1000)
    run_step(False)
    assert (evidence.prob < 0).all()
    run_step(True)
    assert int((evidence.prob >= 0).sum()) == 16 and int((evidence.code >= 0).sum()) == 16
    assert bench(["step", "--arch", "small_cnn", "--size", "28", "--batch-size", "16", "--dtype", "fp32",
                  "--audit", "1000", "--steps", "2", "--warmup", "1", "--rounds", "2"]) == 0
    assert "with / without:" in capsys.readouterr().out
