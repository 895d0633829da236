"""``lacol-bench audit``: the label audit of one LaCoL run beside cleanlab on K-fold probabilities.

For each noise kind, on the recipe's data and noise draw:
- LaCoL: one training run; its ``audit.npz`` read by ``lacol.audit`` (flags and scores).
- cleanlab: K runs of the project's CE on the same strong views (``loss.method=ce_strong``,
  same network, epochs and schedule), each trained on K-1 folds of the training rows and
  predicting the held-out fold (``data.cv_folds``); ``cleanlab.filter.find_label_issues`` on the
  out-of-fold probabilities (its default, prune_by_noise_rate), ranked by self-confidence. A
  user would then train once more on the cleaned labels: one further run, counted, not run.
Both are scored against the known clean labels: precision, recall and F1 of the flags, the
precision of the top 5% by score, and the training compute each needed (runs, seconds).
Runs are subprocesses (``--jobs`` side by side, one torch thread each); finished runs are reused.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _runs(a) -> dict[str, list[tuple[str, list[str]]]]:
    """Per noise kind: [(run name, overrides)], the LaCoL run first, then the K folds."""
    out = {}
    for kind in a.noise.split(","):
        common = [*a.overrides, f"data.noise={kind}", f"data.noise_rate={a.rate}", f"data.noise_seed={a.seed}",
                  f"train.seed={a.seed}", "train.threads=1", "train.progress=false", f"train.out_dir={a.out_dir}"]
        runs = [(f"{a.prefix}-{kind}-lacol", [*common, "loss.method=lacol"])]
        runs += [(f"{a.prefix}-{kind}-cv{k}", [*common, "loss.method=ce_strong", f"data.cv_folds={a.folds}",
                                                f"data.cv_fold={k}", "train.audit=false"]) for k in range(a.folds)]
        out[kind] = [(name, [*o, f"train.name={name}"]) for name, o in runs]
    return out


def _train(config: str, out_dir: str, name: str, overrides: list[str]) -> None:
    if (Path(out_dir) / name / "summary.json").is_file():
        return
    cmd = [sys.executable, "-m", "lacol.cli", "train", "--config", config, *overrides]
    resume = any((Path(out_dir) / name / "checkpoints").glob("step_*"))
    p = subprocess.run(cmd + (["--resume"] if resume else []), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{p.stderr[-3000:]}")


def cleanlab_flags(out_dir: Path, names: list[str]) -> dict:
    """cleanlab's flags and scores from the folds' held-out probabilities, in row order."""
    from cleanlab.filter import find_label_issues

    parts = []
    for name in names:
        with np.load(out_dir / name / "heldout_probs.npz", allow_pickle=False) as z:
            parts.append({k: z[k] for k in z.files})
    rows = np.concatenate([p["rows"] for p in parts])
    order = np.argsort(rows)
    if len(np.unique(rows)) != len(rows):
        raise RuntimeError("the folds' held-out rows overlap")
    probs, labels, clean = (np.concatenate([p[k] for p in parts])[order] for k in ("probs", "labels", "clean"))
    flagged = find_label_issues(labels.astype(int), probs.astype(np.float64))
    score = 1.0 - probs[np.arange(len(labels)), labels]
    return {"flagged": flagged, "score": score, "labels": labels, "clean": clean, "rows": rows[order]}


def bench_audit(a) -> int:
    from rich.console import Console
    from rich.table import Table

    from lacol import audit

    plan = _runs(a)
    jobs = [(name, o) for runs in plan.values() for name, o in runs]
    with ThreadPoolExecutor(a.jobs) as pool:
        for f in [pool.submit(_train, a.config, a.out_dir, name, o) for name, o in jobs]:
            f.result()
    out_dir = Path(a.out_dir)
    table = Table(title=f"label audit: LaCoL (1 run) beside cleanlab ({a.folds}-fold CE on the strong views), "
                        f"{a.rate:.0%} noise, noise draw and seed {a.seed}")
    for col in ("noise", "method", "flagged", "precision %", "recall %", "F1 %", "precision top 5% %",
                "training runs", "training s"):
        table.add_column(col, justify="right")
    results = {}
    for kind, runs in plan.items():
        lacol_run = out_dir / runs[0][0]
        rec = audit.analyse(audit.load(lacol_run / "audit.npz"))
        ours = audit.detection(rec.flagged, rec.score, rec.labels, rec.clean)
        ours["train_seconds"] = json.loads((lacol_run / "summary.json").read_text())["train_seconds"]
        ours["runs"] = 1
        cl = cleanlab_flags(out_dir, [name for name, _ in runs[1:]])
        if not np.array_equal(cl["rows"], np.sort(rec.rows)):
            raise RuntimeError("the folds cover other rows than the LaCoL run")
        theirs = audit.detection(cl["flagged"], cl["score"], cl["labels"], cl["clean"])
        theirs["train_seconds"] = sum(json.loads((out_dir / n / "summary.json").read_text())["train_seconds"]
                                      for n, _ in runs[1:])
        theirs["runs"] = a.folds
        results[kind] = {"lacol": ours, "cleanlab": theirs}
        for name, r, runs_text in (("lacol audit", ours, "1"), ("cleanlab", theirs, f"{a.folds} (+1 on cleaned labels)")):
            table.add_row(f"{kind} {a.rate:.0%}", name, str(r["flagged"]), f"{100 * r['precision']:.1f}",
                          f"{100 * r['recall']:.1f}", f"{100 * r['f1']:.1f}", f"{100 * r['precision_top5pct']:.1f}",
                          runs_text, f"{r['train_seconds']:.0f}")
    Console(width=160).print(table)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("audit", help="lacol audit of one LaCoL run beside cleanlab on K-fold CE probabilities")
    s.add_argument("--config", default="configs/fashion_mnist.yaml")
    s.add_argument("--noise", default="instance,symmetric,asymmetric")
    s.add_argument("--rate", type=float, default=0.4)
    s.add_argument("--seed", type=int, default=1, help="noise draw and training seed")
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--jobs", type=int, default=2, help="training runs side by side")
    s.add_argument("--prefix", default="audit")
    s.add_argument("--out-dir", default="runs/audit_bench")
    s.add_argument("--out", help="write the results as JSON")
    s.add_argument("overrides", nargs="*", help="section.key=value for every run")
