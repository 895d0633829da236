"""`lacol train | compare | eval | audit | plot | predict`: parse, build, run; nothing else."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipelines.fileio import output_target
from pipelines.sources.base import DatasetError

from .config import METHODS, ConfigError, choice, load_config, same_experiment
from .losses import NonFiniteLoss
from .models import WeightsError

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "configs" / "fashion_mnist.yaml"


def _recipe(path: str | None) -> Path:
    return Path(path) if path else DEFAULT_RECIPE


def cmd_train(args) -> int:
    from .train import train

    cfg = load_config(_recipe(args.config), args.overrides)
    summary = train(cfg, resume=args.resume)
    print(json.dumps(summary))
    return 0


def _seeds(text: str, option: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: write integers separated by commas, e.g. 0,1,2") from None
    if any(s < 0 for s in seeds):
        raise ConfigError(f"{option} {text!r}: seeds are >= 0")
    if len(set(seeds)) != len(seeds):  # one run counted twice would report a spread of 0
        raise ConfigError(f"{option} {text!r}: each seed once")
    return seeds


def cmd_compare(args) -> int:
    """LaCoL beside its controls: same recipe, data, views, epochs and seeds; a table of test
    accuracy (final epoch, mean of the last 10 and, with a validation split, at the epoch the
    noisy validation accuracy picks), mean and spread over seeds. Each seed draws its own noise
    (``data.noise_seed`` = the seed) unless ``--fixed-noise``."""
    from rich.console import Console

    from .train import train

    seeds = _seeds(args.seeds, "--seeds")
    methods = args.methods.split(",")
    for m in methods:
        choice("--methods", m, METHODS)
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        draw = [] if args.fixed_noise else [f"data.noise_seed={seed}"]
        for m in methods:
            cfg = load_config(_recipe(args.config), [*args.overrides, f"loss.method={m}", f"train.seed={seed}", *draw])
            if args.prefix:
                cfg.train.name = f"{args.prefix}-{cfg.run_name}"
            run = Path(cfg.train.out_dir) / cfg.run_name
            done = run / "summary.json"
            if args.reuse and done.is_file():
                same_experiment(run, cfg)
                try:
                    results[m].append(json.loads(done.read_text()))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{done}: not JSON ({e}); run without --reuse to train it again") from None
                continue
            resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step_*"))
            results[m].append(train(cfg, resume=resume))
    cfg = load_config(_recipe(args.config), args.overrides)
    noise = "one noise draw" if args.fixed_noise else "noise drawn per seed"
    title = (f"{cfg.data.dataset}, {cfg.data.noise} noise {cfg.data.noise_rate:g}, {cfg.optim.epochs} epochs, "
             f"seeds {args.seeds} ({noise}): test accuracy % (mean ± std over seeds)")
    console = Console() if sys.stdout.isatty() else Console(width=160)  # a log is not 80 columns
    console.print(results_table(results, title))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


def mean_std(values) -> str:
    """'mean ± std' in percent over seeds (sample std), '-' for none."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "-"
    return f"{100 * v.mean():.2f} ± {100 * v.std(ddof=1):.2f}" if len(v) > 1 else f"{100 * v[0]:.2f}"


def results_table(results: dict[str, list[dict]], title: str):
    """A rich table of run summaries by method."""
    from rich.table import Table

    table = Table(title=title)
    val = any("best_val_test_acc" in r for runs in results.values() for r in runs)
    cols = ["method", "final", "mean of last 10 epochs", *(["at best val epoch"] if val else []),
            "selection precision (last epoch)", "selection recall", "selected", "train s / run"]
    for col in cols:
        table.add_column(col, justify="right")
    for m, runs in results.items():
        sel = m in METHODS and METHODS[m].selects
        table.add_row(m, mean_std([r["final_test_acc"] for r in runs]), mean_std([r["last10_test_acc"] for r in runs]),
                      *([mean_std([r.get("best_val_test_acc") for r in runs])] if val else []),
                      mean_std([r["final_precision"] for r in runs]) if sel else "-",
                      mean_std([r.get("final_recall") for r in runs]) if sel else "-",
                      mean_std([r["final_selected_rate"] for r in runs]) if sel else "-",
                      f"{np.mean([r['train_seconds'] for r in runs]):.0f}")
    return table


def cmd_eval(args) -> int:
    from .infer import evaluate_run

    for name, r in evaluate_run(args.run, args.weights).items():
        print(f"{name}: accuracy {100 * r['acc']:.2f}% over {r['n']} samples")
    return 0


def cmd_audit(args) -> int:
    from .review import report

    if args.top < 0:
        raise ConfigError(f"--top {args.top}: must be >= 0")
    if args.per_group < 1 or args.max_images < 1:
        raise ConfigError("--per-group and --max-images: must be >= 1")
    for out in (args.out, args.plot, args.html, args.export, args.relabel):
        if out:
            output_target(out)  # before any work: a device, FIFO or folder is refused, naming it
    report(args.run, args.top, args.out, args.plot, html=args.html, export=args.export, relabel=args.relabel,
           per_group=args.per_group, max_images=args.max_images)
    return 0


def cmd_plot(args) -> int:
    from .plot import plot

    output_target(args.out)
    print(f"wrote {plot(args.runs, args.out, args.title)}")
    return 0


def cmd_predict(args) -> int:
    from .infer import predict

    if args.topk < 1:
        raise ConfigError(f"--topk {args.topk}: must be >= 1")
    for path, top in predict(args.run, args.images, args.topk, args.weights):
        print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lacol", description="LaCoL: learning with noisy labels")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one run")
    t.add_argument("--config", help=f"recipe YAML (default {DEFAULT_RECIPE.name})")
    t.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    t.add_argument("overrides", nargs="*", help="section.key=value")
    t.set_defaults(fn=cmd_train)
    c = sub.add_parser("compare", help="LaCoL beside its controls over seeds")
    c.add_argument("--config")
    c.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1,2; each also draws the noise")
    c.add_argument("--methods", default="lacol,ce_strong",
                   help=f"comma-separated loss.method values ({', '.join(METHODS)}); ce_strong is the fair control")
    c.add_argument("--fixed-noise", action="store_true",
                   help="every seed trains on the config's one noise draw (data.noise_seed)")
    c.add_argument("--prefix", default="", help="run-name prefix")
    c.add_argument("--reuse", action="store_true", help="reuse finished runs (summary.json) of the same name")
    c.add_argument("--out", help="write all summaries to this JSON file")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(fn=cmd_compare)
    e = sub.add_parser("eval", help="evaluate a run's weights on its evaluation splits")
    e.add_argument("--run", required=True)
    e.add_argument("--weights", default="model.safetensors")
    e.set_defaults(fn=cmd_eval)
    a = sub.add_parser("audit", help="which training labels are wrong, from a finished run's record")
    a.add_argument("--run", required=True)
    a.add_argument("--top", type=int, default=20, help="print the N most suspect labels")
    a.add_argument("--out", help="write every flagged label, ranked, to this CSV file")
    a.add_argument("--plot", help="write the score histogram, clean vs mislabelled, to this PNG")
    a.add_argument("--html", help="write a self-contained review page of the flagged images (open it in a browser)")
    a.add_argument("--per-group", type=int, default=24, help="--html: thumbnails per (given -> suggested) pair")
    a.add_argument("--max-images", type=int, default=2400, help="--html: thumbnails in all")
    a.add_argument("--export", help="write every row as an issue table (cleanlab's columns: row, file, given_label, "
                   "suggested_label, label_score, is_label_issue), .csv or .json")
    a.add_argument("--relabel", help="write the dataset's key label list with the flagged labels replaced by the "
                   "suggestions (Clothing1M format; train on it with data.label_file=FILE)")
    a.set_defaults(fn=cmd_audit)
    g = sub.add_parser("plot", help="accuracy, selection and loss curves of runs, one line per run (PNG)")
    g.add_argument("runs", nargs="+", help="run folders")
    g.add_argument("--out", required=True, help="PNG file")
    g.add_argument("--title")
    g.set_defaults(fn=cmd_plot)
    p = sub.add_parser("predict", help="top-k classes for image files")
    p.add_argument("--run", required=True)
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--weights", default="model.safetensors")
    p.add_argument("images", nargs="+")
    p.set_defaults(fn=cmd_predict)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, DatasetError, WeightsError, FileNotFoundError, FileExistsError, NonFiniteLoss) as e:
        print(f"lacol {args.cmd}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output folder that is read-only, full, or a file: name it, not a traceback
        if e.filename is None:
            raise
        print(f"lacol {args.cmd}: {e.filename}: {e.strerror}; choose a writable folder with space "
              f"(train.out_dir), or free some", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
