"""``make gpu-check OUT=folder``: everything only a CUDA GPU can show, in one command, offline.

Prints the GPU, driver, torch, Triton, DALI and FFCV versions; runs the CUDA tests (kernels
compiled and checked against the reference, DALI's GPU graph, GPU views against the CPU engine
and under ``torch.cuda.set_sync_debug_mode("error")``, training steps likewise); builds a
Clothing1M-layout folder of synthetic JPEGs (no dataset download); measures ``lacol-bench step``
(ResNet-50, 224 px, bf16), each available backend's ``loader`` (views on the GPU) and ``train``
(its ratio to step), and ``kernel`` in fp32 and bf16. ``gpu_check.json`` and ``gpu_check.md``
in OUT are rewritten after every measurement, so a run cut short keeps what it measured; a
measurement that fails is recorded with its error and the rest go on (exit 1 if any failed). A
backend whose package is missing is skipped with a one-line reason. Without CUDA it says so and
exits 2; ``--dry-run`` (what CI runs, with ``--without nvidia,ffcv`` as on the GPU host) checks
that every command parses and writes the report without measuring.
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path


HIDDEN: set[str] = set()
"""Modules treated as absent (``--without``: the dry run shows what the GPU host, which has no
DALI or FFCV unless shipped, would skip)."""
TESTS = ["tests/test_gpu.py", "tests/test_kernels.py", "tests/test_sync.py"]
"""The CUDA tests: each needs only torch, Triton and the repository (no dataset, no network)."""


def _version(module: str) -> str | None:
    if module.split(".")[0] in HIDDEN or module in HIDDEN:
        return None
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:
        return None


def measurements(root: Path, backends: list[str], batch_size: int) -> dict[str, list[str]]:
    """{name: lacol-bench argv}: what gpu-check measures, in order."""
    bs = str(batch_size)
    m = {"step": ["step", "--batch-size", bs], "step_compiled": ["step", "--batch-size", bs, "--compile"],
         # the label audit's recording at Clothing1M's size, side by side with the plain step
         "step_audit": ["step", "--batch-size", bs, "--audit", "1000000", "--rounds", "6"],
         "loader": ["loader", "--root", str(root), "--backends", ",".join(backends), "--device", "cuda",
                    "--batch-size", bs, "--workers", "8", "--threads", "8", "--batches", "10", "--repeats", "1"],
         "train": ["train", "--root", str(root), "--backends", ",".join(backends), "--batch-size", bs,
                   "--workers", "8", "--steps", "10", "--warmup", "3"]}
    for dtype in ("fp32", "bf16"):
        m[f"kernel_{dtype}"] = ["kernel", "--dtype", dtype, "--repeats", "10"]
    m["sampler"] = ["sampler", "--sizes", "4096,16384"]
    return m


def _run(argv: list[str], dry: bool = False) -> str:
    """A ``lacol-bench`` call in this process, its printed table as text (``dry``: parsed only)."""
    from tools.bench import main as bench, parser

    if dry:
        try:
            parser().parse_args(argv)
        except SystemExit as e:
            raise RuntimeError(f"lacol-bench {' '.join(argv)} does not parse") from e
        return "dry run: parsed lacol-bench " + " ".join(argv)
    out = io.StringIO()
    with redirect_stdout(out):
        rc = bench(argv)
    if rc:
        raise RuntimeError(f"lacol-bench {' '.join(argv)} exited {rc}:\n{out.getvalue()}")
    return out.getvalue()


def write_report(out: Path, report: dict) -> None:
    """gpu_check.json and gpu_check.md as they stand (called after every measurement, atomically)."""
    from pipelines.fileio import atomic_json, atomic_write

    atomic_json(out / "gpu_check.json", report)
    md = [f"# gpu-check: {report['gpu']}, {report['date']}, commit {report['commit']}"
          + (" (dry run)" if report.get("dry_run") else ""), "",
          f"torch {report['torch']} (CUDA {report['cuda']}), Triton {report['triton']}, DALI {report['dali']}, "
          f"FFCV {report['ffcv']}, driver {report['driver']}, {report['cpus']} CPUs; "
          f"{report.get('seconds', '?')} s so far", "", f"tests: {report.get('tests', 'not run')}", ""]
    md += [f"skipped {k}: {v}" for k, v in report["skipped"].items()]
    md += [f"FAILED {k}: {v}" for k, v in report["errors"].items()]
    for name, text in report["results"].items():
        md += ["", f"## {name}", "", "```", text.rstrip(), "```"]
    atomic_write(out / "gpu_check.md", "\n".join(md) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--num-train", type=int, default=6144, help="images of the synthetic Clothing1M-layout set")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="without a GPU: check every command parses, name what "
                   "would be skipped, write the report; nothing is measured")
    p.add_argument("--without", type=lambda v: set(v.split(",")), default=set(),
                   help="treat these modules as absent (e.g. nvidia,ffcv: as on a GPU host without the wheels)")
    a = p.parse_args(argv)
    import torch

    HIDDEN.update(a.without)
    if not torch.cuda.is_available() and not a.dry_run:
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine. Run "
              "`make gpu-check OUT=folder` on the GPU host (README: the GPU check), or add --dry-run.",
              file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (dry run)"
    report: dict = {"gpu": gpu, "driver": _driver(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "triton": _version("triton"), "dali": _version("nvidia.dali"), "ffcv": _version("ffcv"),
                    "python": platform.python_version(), "cpus": os.cpu_count(), "commit": _commit(),
                    "date": time.strftime("%Y-%m-%d"), "dry_run": a.dry_run, "skipped": {}, "errors": {},
                    "results": {}}
    print(json.dumps({k: v for k, v in report.items() if k not in ("skipped", "errors", "results")}, indent=1))
    write_report(out, report)

    def measure(name: str, fn) -> None:
        """One measurement: its result, or its error (the rest go on); the report rewritten."""
        try:
            report["results"][name] = fn()
        except Exception as e:
            report["errors"][name] = f"{type(e).__name__}: {e}"[:2000]
            print(f"gpu-check: {name} failed: {report['errors'][name]}", file=sys.stderr)
        report["seconds"] = round(time.perf_counter() - t0, 1)
        write_report(out, report)

    if a.skip_tests:
        pass
    elif a.dry_run:
        missing = [t for t in TESTS if not Path(t).is_file()]
        report["tests"] = f"dry run: would run {' '.join(TESTS)}" + (f"; MISSING {missing}" if missing else "")
        if missing:
            report["errors"]["tests"] = f"missing test files {missing}"
    else:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", *TESTS], capture_output=True, text=True,
                               env={**os.environ, "TRITON_INTERPRET": "0"})
        report["tests"] = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-500:]
        print("tests:", report["tests"])
        (out / "gpu_tests.log").write_text(tests.stdout + tests.stderr)
        if tests.returncode:
            report["errors"]["tests"] = report["tests"]
    write_report(out, report)
    root = out / "data"
    measure("data", lambda: _build_data(root, a.num_train, report, a.dry_run))
    from pipelines.build import BACKENDS

    backends = [b for b in BACKENDS if b not in report["skipped"]]
    for name, bench_argv in measurements(root, backends, a.batch_size).items():
        measure(name, lambda argv=bench_argv: _run(argv, a.dry_run))
    print((out / "gpu_check.md").read_text())
    return 1 if report["errors"] else 0


def _build_data(root: Path, num_train: int, report: dict, dry: bool = False) -> str:
    """Synthetic Clothing1M-layout JPEGs, converted for each backend whose package imports
    (``dry``: only the skipped backends are named)."""
    from tools.clothing1m_sample import build

    if _version("ffcv") is None:
        report["skipped"]["ffcv"] = "ffcv does not import (README: ship the cp312 wheel)"
    if _version("nvidia.dali") is None:
        report["skipped"]["dali"] = "nvidia.dali does not import (README: ship the wheels in parts)"
    if dry:
        return f"dry run: would build {num_train} synthetic images under {root}"
    if not (root / "noisy_label_kv.txt").is_file():
        build(root, num_train, 256, 256, synthetic=True, workers=os.cpu_count() or 4)
    from pipelines.formats import beton_path, list_path
    from pipelines.sources import load_split

    splits = {name: load_split("clothing1m", name, root) for name in ("noisy_train", "clean_val", "clean_test")}
    if "ffcv" not in report["skipped"]:
        from tools.beton import convert_split

        for name, split in splits.items():
            if not beton_path(root / "ffcv", "clothing1m", name).is_file():
                convert_split(split, "clothing1m", name, beton_path(root / "ffcv", "clothing1m", name), progress=False)
    if "dali" not in report["skipped"]:
        from tools.beton import convert_file_list

        for name, split in splits.items():
            if not list_path(root / "dali", "clothing1m", name).is_file():
                convert_file_list(split, "clothing1m", name, list_path(root / "dali", "clothing1m", name),
                                  progress=False)
    return f"{num_train} synthetic images under {root}, converted for: " + ", ".join(
        b for b in ("ffcv", "dali") if b not in report["skipped"]) or "no other backend"


def _driver() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or "?"
    except Exception:
        return "?"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
