"""``lacol plot RUN [RUN ...] --out FILE.png``: runs' curves per epoch, one line per run.

Panels: test accuracy; validation accuracy (noisy labels) where a run has a validation split;
selection precision, recall and selected rate (LaCoL and selection-only); the loss terms. A
line's colour is its method, its style its seed, so controls and seeds read apart.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .methods.registry import METHODS, TERM_NAMES

STYLES = ("-", "--", ":", "-.")
TERMS = {**TERM_NAMES, "ce": "CE on the weak view"}


def _run(path: Path) -> tuple[dict, list[dict]]:
    for f in ("config.yaml", "history.json"):
        if not (path / f).is_file():
            raise FileNotFoundError(f"{path / f} is missing: is {path} a `lacol train` run folder?")
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    return cfg, json.loads((path / "history.json").read_text())


def pyplot():
    """matplotlib.pyplot without a display (Agg), or a one-line exit naming the install."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plots need matplotlib: pip install -e '.[plot]'") from None
    return plt


def save_png(fig, path: str | Path) -> None:
    """The figure as a PNG file, written atomically, then closed."""
    from pipelines.fileio import atomic_path

    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)


def _terms(method: str) -> tuple[str, ...]:
    cls = METHODS.get(method)
    return cls.terms if cls else ()


def _selects(method: str) -> bool:
    cls = METHODS.get(method)
    return bool(cls and cls.selects)


def plot(runs: list[str | Path], out: str | Path, title: str | None = None) -> Path:
    plt = pyplot()
    loaded = [(Path(r), *_run(Path(r))) for r in runs]
    seeds = sorted({c["train"]["seed"] for _, c, _ in loaded})
    panels = [("test_acc", "test accuracy %", 100), ("val_acc", "validation accuracy % (noisy labels)", 100),
              ("precision", "selection precision %", 100), ("recall", "selection recall %", 100),
              ("selected_rate", "selected %", 100), ("loss", "loss terms", 1)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), dpi=100)
    for ax, (key, label, scale) in zip(axes.flat, panels):
        for path, cfg, hist in loaded:
            method, seed = cfg["loss"]["method"], cfg["train"]["seed"]
            style = dict(color=getattr(METHODS.get(method), "colour", "black"), linestyle=STYLES[seeds.index(seed) % len(STYLES)])
            name = f"{method} s{seed}"
            if key == "loss":
                for j, (term, tname) in enumerate(TERMS.items()):
                    pts = [(h["epoch"], h[term]) for h in hist if h.get(term) is not None]
                    if pts and (term in _terms(method) or term == "ce"):
                        ax.plot(*zip(*pts), color=style["color"], linestyle=STYLES[j % len(STYLES)], alpha=0.8,
                                label=f"{name} {tname}" if seed == seeds[0] else None)
                continue
            pts = [(h["epoch"], scale * h[key]) for h in hist if h.get(key) is not None]
            if key in ("precision", "recall", "selected_rate") and not _selects(method):
                pts = []  # the CE arms select nothing
            if pts:
                ax.plot(*zip(*pts), **style, label=name)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    d = loaded[0][1]["data"]
    fig.suptitle(title or f"{d['dataset']}, {d['noise']} noise {d['noise_rate']:g}: {len(loaded)} runs")
    save_png(fig, out)
    return Path(out)
