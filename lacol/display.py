"""Rich display of a run: a live progress bar (samples/s, ETA) and a per-epoch table. Quiet on
every process but the main one."""
from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .methods.registry import METHODS, TERM_NAMES

HEAD = [("epoch", "epoch", "{:d}"), ("lr", "lr", "{:.4f}"), ("loss", "loss", "{:.3f}")]
SELECTION = [("selected_rate", "sel %", "{:.1%}"), ("precision", "prec", "{:.3f}"), ("recall", "recall", "{:.3f}")]
PSEUDO = [("pseudo_rate", "PL %", "{:.1%}"), ("pseudo_precision", "PL prec", "{:.3f}")]
TAIL = [("samples_per_s", "samples/s", "{:.0f}"), ("seconds", "s", "{:.0f}")]


def columns(cfg) -> list[tuple[str, str, str]]:
    """The per-epoch table's columns for the run's method: its loss terms (from the registry),
    the warm-up's, and its selection and pseudo-label rates where it has them."""
    cls = METHODS.get(cfg.loss.method)
    terms = [t for t in (cls.terms if cls else ()) if t != "pl" or cfg.loss.pseudo_threshold > 0]
    if cls is None or cls.uses_warmup or "ce" in terms:
        terms = [t for t in terms if t != "ce"] + ["ce"] + (["penalty"] if cfg.loss.warmup_penalty > 0 else [])
    cols = HEAD + [(t, TERM_NAMES.get(t, t), "{:.3f}") for t in terms]
    if cls is not None and cls.selects:
        cols += SELECTION + (PSEUDO if cfg.loss.pseudo_threshold > 0 else [])
    return cols + TAIL


def fmt(row: dict, key: str, spec: str) -> str:
    v = row.get(key)
    return "" if v is None else spec.format(v)


class Display:
    def __init__(self, cfg, enabled: bool, steps_per_epoch: int, evals=("test",)):
        self.enabled = enabled
        self.console = Console()
        self.live_ok = enabled and cfg.train.progress and self.console.is_terminal
        self.steps = steps_per_epoch
        self.epochs = cfg.optim.epochs
        # one column per evaluation split: Clothing1M's clean_val/clean_test, a held-out noisy "val", "test"
        acc = [(f"{name}_acc", "val acc (noisy)" if name == "val" else f"{name.removeprefix('clean_')} acc", "{:.2%}")
               for name in evals]
        self.columns = columns(cfg) + acc
        self.table = Table(title=cfg.run_name)
        for _, head, _ in self.columns:
            self.table.add_column(head, justify="right")
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>6.0f} samples/s"), TextColumn("loss {task.fields[loss]:.3f}"),
                                 TimeRemainingColumn(), console=self.console)
        self.task = None
        self.live = None

    def __enter__(self):
        if self.live_ok:
            self.live = Live(Group(self.table, self.progress), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def start_epoch(self, epoch: int, start: int) -> None:
        if not self.live_ok:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                           completed=start, rate=0.0, loss=float("nan"))

    def step(self, done: int, record: dict) -> None:
        """A logged step: the bar moves to ``done`` steps of the epoch."""
        if self.live_ok:
            self.progress.update(self.task, completed=done, rate=record["samples_per_s"],
                                 loss=record["loss"])

    def epoch_row(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {**row, "epoch": row["epoch"] + 1}  # 1-based on screen, like the progress bar
        self.table.add_row(*(fmt(row, k, s) for k, _, s in self.columns))
        if not self.live_ok:  # a log, not a terminal: one plain line per epoch
            self.console.print("  ".join(f"{h}={fmt(row, k, s)}" for k, h, s in self.columns if row.get(k) is not None),
                               soft_wrap=True)
