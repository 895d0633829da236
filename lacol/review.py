"""What ``lacol audit`` hands a person and other tools (``report``: the command itself): the
printed summary, a page to review the flagged labels on, the issues as a table other tools
read, and a relabelled key list; ``lacol/audit.py`` records and analyses.

- ``write_html``: one self-contained page (thumbnails inline as data URIs, no network, opens from
  disk) of the flagged labels, grouped by (given -> suggested) pair, the groups by size, each
  ranked by score; each card shows the training image as the loader decodes it (before any
  augmentation), the given and suggested class, the score, the epochs it was flagged in and, where
  the clean label is known, whether the given label was wrong. A header gives the counts per class
  and, where clean labels are known, the flags' precision and recall. Thumbnails are capped per
  group and in all (the page says how many it shows), so a 1M-row run's page stays a few MB; the
  CSV lists every flag.
- ``write_issues``: every training row as ``row, file, given_label, suggested_label, label_score,
  is_label_issue`` (+ ``clean_label`` where known), CSV or JSON by the file's suffix. The columns
  follow cleanlab's label-issue table (``Datalab.get_issues("label")``: ``is_label_issue``,
  ``label_score``, ``given_label``, ``predicted_label``, here named ``suggested_label``):
  ``label_score`` is cleanlab's label quality, the mean weak-view p(given label) over the window
  (lower: more likely wrong), i.e. 1 - the audit's score.
- ``write_relabel``: a Clothing1M-format ``key label`` file: the training split's noisy label
  list with each flagged key's label replaced by its suggestion; ``data.label_file=FILE`` trains
  on it with ``data.root`` unchanged.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from pipelines.fileio import atomic_path, atomic_write

from . import audit
from .losses import NonFiniteLoss
from .audit import Audit, detection, ranked


def flagged_epochs(rec: dict[str, np.ndarray], pos: list[int]) -> dict[int, np.ndarray]:
    """For the record's columns ``pos``, the recorded epochs in which the weak view predicted
    another class than the given label."""
    seen, pred = rec["seen"][:, pos].astype(bool), rec["pred"][:, pos].astype(np.int64)
    off = seen & (pred != rec["labels"][pos].astype(np.int64)[None, :])
    return {p: rec["epochs"][off[:, j]] for j, p in enumerate(pos)}


def _thumbnail(image: np.ndarray, size: int) -> str:
    """An (H, W, C) uint8 image as a data-URI PNG, its longer side scaled to ``size`` (nearest
    for small images, so Fashion-MNIST's pixels stay visible)."""
    from PIL import Image

    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.NEAREST if scale >= 2 else Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _images(split, rows: np.ndarray, decode_size: int):
    """The decoded training images of ``rows`` (full-split indices), as the loader decodes them."""
    if split.images is not None:
        return (split.images[r] for r in rows)
    from pipelines.decode import decode_square

    return (decode_square(split.path(r), decode_size, root=split.root) for r in rows)


def _ranges(epochs: np.ndarray) -> str:
    """Epochs as runs: [4, 5, 6, 9] -> "4-6, 9"."""
    runs: list[list[int]] = []
    for x in map(int, epochs):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs) or "-"


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0} td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:150px;border:1px solid #ccc;border-radius:4px;padding:4px;background:#fafafa}
figure img{display:block;margin:0 auto;image-rendering:pixelated;max-width:140px}
figcaption{font-size:12px;line-height:1.3}
.wrong{border-color:#2a7;background:#effaf3} .right{border-color:#c33;background:#fdf0f0}
.note{color:#666} .bar{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ccc}
"""

SCRIPT = """
const pick = document.getElementById('pair');
pick.addEventListener('change', () => {
  for (const g of document.querySelectorAll('section.group'))
    g.style.display = (pick.value === 'all' || g.dataset.pair === pick.value) ? '' : 'none';
});
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = imgs.length;
});
"""


def write_html(path: Path, a: Audit, rec: dict, split, files: list[str] | None, run_name: str, *,
               decode_size: int = 256, thumb: int = 112, per_group: int = 24, max_images: int = 2400) -> dict:
    """The review page (see the module docstring); returns what it shows (counts)."""
    e = html.escape
    order = ranked(a)
    known = a.clean >= 0
    groups: dict[tuple[int, int], list[int]] = {}
    for i in order:
        groups.setdefault((int(a.labels[i]), int(a.suggested[i])), []).append(int(i))
    groups_sorted = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    cap = max(1, min(per_group, max_images // max(1, len(groups_sorted))))
    shown = {k: v[:cap] for k, v in groups_sorted}
    picks = [i for v in shown.values() for i in v]
    epochs = flagged_epochs(rec, picks)
    rank_of = {int(i): r for r, i in enumerate(order, 1)}
    thumbs = dict(zip(picks, (_thumbnail(np.asarray(im), thumb) for im in _images(split, a.rows[picks], decode_size))))
    n, nf = len(a.score), int(a.flagged.sum())
    head = [f"<h1>Label review: {e(run_name)}</h1>",
            f"<p><b id='flagged-count'>{nf}</b> of {n} training labels flagged ({100 * nf / max(n, 1):.1f}%) by "
            f"{e(a.method)}, from epochs {a.window[0]}-{a.window[-1]}. A flag: the weak view predicts another class "
            f"in most of those epochs; score = 1 - mean p(given label) (higher: more likely wrong). "
            f"<span class='note'>Showing <span id='shown-count'>{len(picks)}</span> thumbnails: at most {cap} per "
            f"(given &rarr; suggested) pair, most suspect first; the CSV (<code>lacol audit --out</code>) lists "
            f"every flag.</span></p>"]
    if known.any():
        d = detection(a.flagged, a.score, a.labels, a.clean)
        head.append(f"<p>Against the known clean labels ({d['known']} rows, {d['mislabelled']} mislabelled): "
                    f"precision <b>{100 * d['precision']:.1f}%</b>, recall <b>{100 * d['recall']:.1f}%</b>, F1 "
                    f"{100 * d['f1']:.1f}%. Green card: the given label is wrong (the flag is right); red: the "
                    f"given label was right.</p>")
    head.append("<table><tr><th>given class</th><th>flagged</th><th>of</th></tr>" + "".join(
        f"<tr><td>{e(name)}</td><td>{int((a.flagged & (a.labels == k)).sum())}</td>"
        f"<td>{int((a.labels == k).sum())}</td></tr>" for k, name in enumerate(a.classes)) + "</table>")
    options = "".join(f"<option value='{g}-{s}'>{e(a.classes[g])} &rarr; {e(a.classes[s])} ({len(v)})</option>"
                      for (g, s), v in groups_sorted)
    head.append(f"<div class='bar'><label>Show: <select id='pair'><option value='all'>every pair "
                f"({len(groups_sorted)})</option>{options}</select></label></div>")
    body = []
    for (g, s), rows in groups_sorted:
        cards = []
        for i in shown[(g, s)]:
            rank = rank_of[i]
            where = e(files[i]) if files else f"row {int(a.rows[i])}"
            flagged_in = _ranges(epochs[i])
            verdict, cls = "", ""
            if known[i]:
                wrong = a.clean[i] != a.labels[i]
                cls = "wrong" if wrong else "right"
                verdict = (f"<br>clean: <b>{e(a.classes[a.clean[i]])}</b> "
                           + ("(given label wrong)" if wrong else "(given label right)"))
            cards.append(f"<figure class='{cls}'><img src='{thumbs[i]}' alt='{where}'><figcaption>#{rank} {where}"
                         f"<br>given <b>{e(a.classes[g])}</b> &rarr; <b>{e(a.classes[s])}</b><br>score "
                         f"{a.score[i]:.3f} &middot; flagged in epochs {flagged_in}{verdict}</figcaption></figure>")
        more = f" (showing {len(shown[(g, s)])})" if len(rows) > len(shown[(g, s)]) else ""
        body.append(f"<section class='group' data-pair='{g}-{s}' data-count='{len(rows)}'><h2>{e(a.classes[g])} "
                    f"&rarr; {e(a.classes[s])}: {len(rows)} flagged{more}</h2><div class='grid'>{''.join(cards)}"
                    f"</div></section>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lacol audit: {e(run_name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(head)}{''.join(body)}<script>{SCRIPT}</script>"
            f"</body></html>")
    atomic_write(path, page)
    return {"flagged": nf, "groups": len(groups_sorted), "thumbnails": len(picks), "bytes": len(page)}


def write_issues(path: Path, a: Audit, files: list[str] | None) -> None:
    """Every training row's issue record, CSV or JSON by ``path``'s suffix (module docstring)."""
    known = a.clean >= 0
    cols = ["row", "file", "given_label", "suggested_label", "label_score", "is_label_issue"] + (
        ["clean_label"] if known.any() else [])
    quality = 1.0 - a.score

    def record(i: int) -> list:
        r = [int(a.rows[i]), files[i] if files else "", a.classes[a.labels[i]], a.classes[a.suggested[i]],
             None if np.isnan(quality[i]) else round(float(quality[i]), 6), bool(a.flagged[i])]
        return r + ([a.classes[a.clean[i]] if known[i] else ""] if known.any() else [])

    if Path(path).suffix.lower() == ".json":
        atomic_write(path, json.dumps([dict(zip(cols, record(i))) for i in range(len(a.score))]) + "\n")
        return
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i in range(len(a.score)):
            w.writerow(["" if v is None else v for v in record(i)])


def write_relabel(path: Path, a: Audit, split, source_kv: Path) -> int:
    """``source_kv`` (the dataset's ``key label`` file) with each flagged training key's label
    replaced by its suggestion, the other lines unchanged; returns the number of labels changed."""
    if split.files is None:
        raise ValueError("--relabel writes a `key label` file for file datasets (Clothing1M layout); "
                         f"{split.name} is an in-memory dataset: use --export for its rows")
    new = {str(split.files[a.rows[i]]): int(a.suggested[i]) for i in np.flatnonzero(a.flagged)}
    changed = 0
    out = []
    for line in source_kv.read_text().splitlines():
        f = line.split()
        if len(f) == 2 and f[0] in new and int(f[1]) != new[f[0]]:
            out.append(f"{f[0]} {new[f[0]]}")
            changed += 1
        else:
            out.append(line)
    atomic_write(path, "\n".join(out) + "\n")
    return changed


def report(run: str | Path, top: int = 20, out: str | None = None, plot: str | None = None, console=None, *,
           html: str | None = None, export: str | None = None, relabel: str | None = None,
           per_group: int = 24, max_images: int = 2400) -> dict:
    """Print the audit of a finished run; write its ranked flags as CSV, its score plot, the
    review page, the issue table and the relabelled key list (``lacol.review``)."""
    from rich.console import Console
    from rich.table import Table

    run = Path(run)
    rec = audit.load(run / "audit.npz")
    if not np.isfinite(rec["prob"].astype(np.float32)).all():
        raise NonFiniteLoss(f"{run / 'audit.npz'}: the record holds NaN probabilities (the run diverged); its flags "
                         f"would mean nothing: retrain (lacol train stops at a non-finite loss)")
    a = audit.analyse(rec)
    cfg, split = audit.training_split(run)
    files = audit.files_of(split, a.rows, run)
    console = console or Console(width=140)
    n = len(a.score)
    console.print(f"[bold]{run.name}[/] ({a.method}): {a.flagged.sum()} of {n} training labels flagged "
                  f"({100 * a.flagged.mean():.1f}%), from epochs {a.window[0]}-{a.window[-1]}. "
                  f"Flag: the weak view predicts another class in most of those epochs; score: "
                  f"1 - mean p(given label).")
    t = Table(title=f"the {min(top, int(a.flagged.sum()))} most suspect labels")
    for col in ("rank", "row" if files is None else "file", "given", "suggested", "score"):
        t.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for rank, i in enumerate(audit.ranked(a)[:top], 1):
        t.add_row(str(rank), str(int(a.rows[i])) if files is None else files[i], a.classes[a.labels[i]],
                  a.classes[a.suggested[i]], f"{a.score[i]:.3f}")
    console.print(t)
    per = Table(title="flagged per given class")
    per.add_column("class")
    per.add_column("flagged", justify="right")
    per.add_column("of", justify="right")
    for k, name in enumerate(a.classes):
        per.add_row(name, str(int((a.flagged & (a.labels == k)).sum())), str(int((a.labels == k).sum())))
    console.print(per)
    console.print("flags concentrate in (given -> suggested): " +
                  ", ".join(f"{g} -> {s}: {c}" for g, s, c in audit.pairs(a, 8)))
    result = {"flagged": int(a.flagged.sum()), "samples": n}
    if (a.clean >= 0).any():
        d = audit.detection(a.flagged, a.score, a.labels, a.clean)
        result.update(d)
        console.print(f"against the known clean labels ({d['known']} rows, {d['mislabelled']} mislabelled): "
                      f"precision {100 * d['precision']:.1f}%, recall {100 * d['recall']:.1f}%, F1 "
                      f"{100 * d['f1']:.1f}%; precision of the top 1% / 5% / 10% by score: "
                      f"{100 * d['precision_top1pct']:.1f}% / {100 * d['precision_top5pct']:.1f}% / "
                      f"{100 * d['precision_top10pct']:.1f}%")
    if out:
        audit.write_csv(Path(out), a, files)
        console.print(f"wrote {out}")
    if plot:
        if not (a.clean >= 0).any():
            raise SystemExit("--plot splits the scores by clean and mislabelled rows: this run's clean labels "
                             "are unknown")
        audit.plot_scores(Path(plot), a)
        console.print(f"wrote {plot}")
    if html:
        shown = write_html(Path(html), a, rec, split, files, run.name, decode_size=cfg.data.decode_size,
                                  per_group=per_group, max_images=max_images)
        console.print(f"wrote {html}: {shown['thumbnails']} thumbnails in {shown['groups']} (given -> suggested) "
                      f"groups, {shown['bytes'] / 1e6:.1f} MB; open it in a browser")
    if export:
        write_issues(Path(export), a, files)
        console.print(f"wrote {export}: {n} rows, {int(a.flagged.sum())} with is_label_issue")
    if relabel:
        source = Path(cfg.data.label_file) if cfg.data.label_file else Path(cfg.data.root or "") / "noisy_label_kv.txt"
        if files is None or not source.is_file():
            raise SystemExit(f"--relabel writes a Clothing1M-format key label file; {cfg.data.dataset} has "
                             f"{'no file keys' if files is None else f'no label list at {source}'}: use --export")
        changed = write_relabel(Path(relabel), a, split, source)
        console.print(f"wrote {relabel}: {changed} labels changed; train on it with data.label_file={relabel}")
    return result
