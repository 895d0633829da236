"""Label audit from the training run itself: which training labels are wrong.

During training (``Evidence``), for every epoch after warm-up and every training row: the
weak-view probability of the given label, the predicted class, and whether the method selected
the sample. Recorded on the training device by index (no host sync per step), combined across
processes by an all-reduce (each row is seen by exactly one process per epoch), saved in every
checkpoint, written once at the end as ``audit.npz``.

Afterwards (``analyse``), over the last half of the recorded epochs (the window; at least one):
- score = 1 - mean p(given label): how little the network believes the label;
- suggested label = the class predicted most often in the window;
- flagged = the prediction differs from the given label in more than half of the window's epochs.
Why the weak-view probabilities are evidence at all: after warm-up LaCoL trains its classifier
only on the samples it selects, so an unselected (mostly mislabelled) sample's given label is
not fitted; its probability behaves like an out-of-sample one, which is what cleanlab buys with
cross-validation.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.fileio import atomic_npz, atomic_path


class Evidence:
    """Per-sample, per-epoch evidence of epochs ``first..first+epochs-1``, on ``device``.

    ``prob`` (E, N) float32: p(given label) of the weak view, -1 where a row was not seen that
    epoch (the dropped remainder of an epoch); ``code`` (E, N) int32: 2 * predicted class +
    selected, -1 where not seen. Both combine across processes with an all-reduce MAX."""

    def __init__(self, n: int, first: int, epochs: int, device):
        self.first, self.n = first, n
        self.prob = torch.full((epochs, n), -1.0, device=device)
        self.code = torch.full((epochs, n), -1, dtype=torch.int32, device=device)

    def record(self, epoch: int, index: torch.Tensor, p_weak: torch.Tensor, labels: torch.Tensor,
               selected: torch.Tensor | None) -> None:
        """A batch's evidence (every argument on the device; nothing crosses to the host)."""
        e = epoch - self.first
        if not 0 <= e < self.prob.shape[0]:
            return
        pred = p_weak.argmax(1)
        sel = (pred == labels) if selected is None else selected
        self.prob[e].index_copy_(0, index, p_weak.gather(1, labels[:, None]).squeeze(1).float())
        self.code[e].index_copy_(0, index, (2 * pred + sel.to(pred.dtype)).int())

    def combined(self, world: int) -> dict[str, torch.Tensor]:
        """Every process's rows in one tensor each (collective when ``world`` > 1), on the host."""
        prob, code = self.prob, self.code
        if world > 1:
            prob, code = prob.clone(), code.clone()
            torch.distributed.all_reduce(prob, op=torch.distributed.ReduceOp.MAX)
            torch.distributed.all_reduce(code, op=torch.distributed.ReduceOp.MAX)
        return {"audit.prob": prob.cpu(), "audit.code": code.cpu()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """A checkpoint's ``combined`` tensors back (every process holds the whole record)."""
        if tensors["audit.prob"].shape != self.prob.shape:
            raise ValueError(f"the checkpoint's audit record has shape {tuple(tensors['audit.prob'].shape)}, "
                             f"this run needs {tuple(self.prob.shape)}")
        self.prob.copy_(tensors["audit.prob"])
        self.code.copy_(tensors["audit.code"])


def write(path: Path, tensors: dict[str, torch.Tensor], *, first: int, labels: np.ndarray, clean: np.ndarray,
          rows: np.ndarray, method: str, classes) -> None:
    """``audit.npz``: the record in compact types (float16, int16, bool), the given and (where
    known) clean labels, the rows of the full split, atomically. No object arrays: it loads
    without pickle."""
    code = tensors["audit.code"].numpy()
    seen = code >= 0
    pred = np.where(seen, code // 2, -1).astype(np.int16)
    atomic_npz(path, compressed=True, prob=tensors["audit.prob"].numpy().astype(np.float16), pred=pred,
               selected=seen & (code % 2 == 1), seen=seen, epochs=np.arange(first, first + code.shape[0]),
               labels=labels.astype(np.int16), clean=clean.astype(np.int16), rows=rows.astype(np.int64),
               method=np.array(method), classes=np.array(list(classes)))


@dataclass
class Audit:
    """``analyse``'s result, one entry per training row."""

    score: np.ndarray
    """1 - mean p(given label) over the window; higher: more likely wrong."""
    flagged: np.ndarray
    suggested: np.ndarray
    labels: np.ndarray
    clean: np.ndarray
    rows: np.ndarray
    window: np.ndarray
    """The epochs the score and flags are computed over."""
    classes: list[str]
    method: str


def load(path: Path) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no audit record; it is written at the end of a training run "
                                f"(train.audit=true, more epochs than loss.warmup_epochs)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise FileNotFoundError(f"{path}: not a complete audit record ({type(e).__name__}: {e}); it is written at "
                                f"the end of a training run: train again, or --resume a stopped one") from None


def analyse(rec: dict[str, np.ndarray]) -> Audit:
    """Scores, flags and suggested labels from an ``audit.npz`` record (see the module's docstring)."""
    prob, pred, seen = rec["prob"].astype(np.float32), rec["pred"].astype(np.int64), rec["seen"]
    e = prob.shape[0]
    win = slice(e - max(1, e // 2), e)
    prob, pred, seen = prob[win], pred[win], seen[win]
    n_seen = seen.sum(0)
    labels = rec["labels"].astype(np.int64)
    c = len(rec["classes"])
    mean_p = np.where(n_seen > 0, (prob * seen).sum(0) / np.maximum(n_seen, 1), np.nan)
    # the class predicted most often in the window (ties: the lowest), one class at a time: O(N)
    # memory, streaming (an (N, C) vote matrix scattered by np.add.at fell out of cache at 1M rows)
    pred = np.where(seen, pred, -1)
    suggested = np.zeros(len(labels), dtype=np.int64)
    best = np.zeros(len(labels), dtype=np.int64)
    for k in range(c):
        count = (pred == k).sum(0)
        better = count > best
        suggested[better], best[better] = k, count[better]
    disagree = n_seen - (pred == labels[None, :]).sum(0)
    flagged = (n_seen > 0) & (2 * disagree > n_seen)
    return Audit(1.0 - mean_p, flagged, suggested, labels, rec["clean"].astype(np.int64), rec["rows"],
                 rec["epochs"][win], [str(x) for x in rec["classes"]], str(rec["method"]))


def detection(flagged: np.ndarray, score: np.ndarray, labels: np.ndarray, clean: np.ndarray) -> dict:
    """Precision, recall and F1 of ``flagged`` against the truly mislabelled rows (clean label
    known), and the precision of the top 1%, 5% and 10% by ``score``."""
    known = clean >= 0
    wrong = (labels != clean) & known
    f, w = flagged & known, wrong
    tp = int((f & w).sum())
    p = tp / max(int(f.sum()), 1)
    r = tp / max(int(w.sum()), 1)
    out = {"flagged": int(f.sum()), "mislabelled": int(w.sum()), "known": int(known.sum()), "precision": p,
           "recall": r, "f1": 2 * p * r / max(p + r, 1e-12)}
    s = np.where(known, np.nan_to_num(score, nan=-np.inf), -np.inf)
    order = np.argsort(-s, kind="stable")
    for q in (0.01, 0.05, 0.10):
        k = max(1, int(round(q * known.sum())))
        out[f"precision_top{int(q * 100)}pct"] = float(wrong[order[:k]].mean())
    return out


def pairs(audit: Audit, top: int = 10) -> list[tuple[str, str, int]]:
    """The (given, suggested) class pairs the flags concentrate in, most frequent first."""
    f = audit.flagged
    counts: dict[tuple[int, int], int] = {}
    for a, b in zip(audit.labels[f], audit.suggested[f]):
        counts[(int(a), int(b))] = counts.get((int(a), int(b)), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    return [(audit.classes[a], audit.classes[b], n) for (a, b), n in ranked]


def training_split(run: Path):
    """(the run's config, its dataset's full training split): what the audit's rows index."""
    from pipelines.sources import dataset_info, load_split

    from .config import read_run_config

    cfg = read_run_config(run)
    return cfg, load_split(cfg.data.dataset, dataset_info(cfg.data.dataset).train, cfg.data.root)


def files_digest(files) -> str:
    """SHA-256 of a list of file keys, in order (what a run trained on; ``dataset.json``)."""
    import hashlib

    return hashlib.sha256("\n".join(map(str, files)).encode()).hexdigest()


def files_of(split, rows: np.ndarray, run: Path | None = None) -> list[str] | None:
    """The file of each audited row for file datasets (Clothing1M); None for in-memory datasets
    (a row is then the index in the full training split). With ``run``, the files must be the
    ones the run trained on (``dataset.json``'s digest): a list edited since is refused."""
    if split.files is None:
        return None
    import json

    list_file = split.root / "noisy_train_key_list.txt" if split.root is not None else split.name
    if len(rows) and int(rows.max()) >= len(split):
        raise FileNotFoundError(f"{list_file}: lists {len(split)} files, the run trained on row {int(rows.max())}: the "
                                f"list changed since training; the audit would name other files")
    files = [str(split.files[r]) for r in rows]
    facts = json.loads((run / "dataset.json").read_text()) if run is not None and (run / "dataset.json").is_file() else {}
    if "files" in facts and files_digest(files) != facts["files"]["sha256"]:
        raise FileNotFoundError(f"{list_file}: not the list {run.name} trained on (its files differ from "
                                f"dataset.json's digest): the audit would name other files; restore the list")
    return files


def ranked(a: Audit) -> np.ndarray:
    """Positions of the flagged rows, most suspect first (score descending, ties by row)."""
    pos = np.flatnonzero(a.flagged)
    return pos[np.lexsort((a.rows[pos], -np.nan_to_num(a.score[pos], nan=-1.0)))]


def write_csv(path: Path, a: Audit, files: list[str] | None) -> None:
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "row", "file", "given", "suggested", "score", "clean"])
        for rank, i in enumerate(ranked(a), 1):
            clean = a.classes[a.clean[i]] if a.clean[i] >= 0 else ""
            w.writerow([rank, int(a.rows[i]), files[i] if files else "", a.classes[a.labels[i]],
                        a.classes[a.suggested[i]], f"{a.score[i]:.4f}", clean])


def plot_scores(path: Path, a: Audit) -> None:
    """Histogram of the score, split by truly clean and truly mislabelled rows (clean labels known)."""
    from .plot import pyplot, save_png

    plt = pyplot()
    known = a.clean >= 0
    wrong = (a.labels != a.clean) & known
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    bins = np.linspace(0, 1, 41)
    ax.hist(a.score[known & ~wrong], bins=bins, alpha=0.6, label=f"label correct ({(known & ~wrong).sum()})")
    ax.hist(a.score[wrong], bins=bins, alpha=0.6, label=f"label wrong ({wrong.sum()})")
    ax.set_yscale("log")
    ax.set_xlabel("score = 1 - mean weak-view p(given label), epochs "
                  f"{a.window[0]}-{a.window[-1]}")
    ax.set_ylabel("training samples")
    ax.set_title(f"lacol audit ({a.method}): flagged {a.flagged.sum()} of {len(a.score)}")
    ax.legend()
    save_png(fig, path)
