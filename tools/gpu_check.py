"""``make gpu-check OUT=folder``: everything only a CUDA GPU can show, in one command, offline.

Prints the GPU, driver, torch, Triton, DALI and FFCV versions; runs the CUDA tests (kernels
compiled, DALI's GPU graph, GPU views against the CPU engine, training steps under
``torch.cuda.set_sync_debug_mode("error")``); builds a Clothing1M-layout folder of synthetic JPEGs
(no dataset download); measures ``lacol-bench step`` (ResNet-50, 224 px, bf16), each available
backend's ``loader`` (views on the GPU) and ``train`` (its ratio to step), and ``kernel`` in fp32
and bf16; writes ``gpu_check.json`` and ``gpu_check.md`` into OUT. A backend whose package is
missing is skipped with a one-line reason. Without CUDA it says so and exits 2.
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


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:
        return None


def _run(argv: list[str]) -> str:
    """A ``lacol-bench`` call in this process, its printed table as text."""
    from tools.bench import main as bench

    out = io.StringIO()
    with redirect_stdout(out):
        rc = bench(argv)
    if rc:
        raise RuntimeError(f"lacol-bench {' '.join(argv)} exited {rc}:\n{out.getvalue()}")
    return out.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--num-train", type=int, default=6144, help="images of the synthetic Clothing1M-layout set")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--skip-tests", action="store_true")
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU: torch.cuda.is_available() is False on this machine. Run "
              "`make gpu-check OUT=folder` on the GPU host (README: the GPU check).", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict = {"gpu": torch.cuda.get_device_name(), "driver": _driver(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "triton": _version("triton"), "dali": _version("nvidia.dali"),
                    "ffcv": _version("ffcv"), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "commit": _commit(), "date": time.strftime("%Y-%m-%d"), "skipped": {}, "results": {}}
    print(json.dumps({k: v for k, v in report.items() if k not in ("skipped", "results")}, indent=1))
    if not a.skip_tests:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_gpu.py", "tests/test_kernels.py",
                                "tests/test_sync.py"], capture_output=True, text=True,
                               env={**os.environ, "TRITON_INTERPRET": "0"})
        report["tests"] = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-500:]
        print("tests:", report["tests"])
        (out / "gpu_tests.log").write_text(tests.stdout + tests.stderr)
    root = out / "data"
    _build_data(root, a.num_train, report)
    backends = [b for b in ("torch", "ffcv", "dali") if b not in report["skipped"]]
    bs = str(a.batch_size)
    r = report["results"]
    r["step"] = _run(["step", "--batch-size", bs])
    r["step_compiled"] = _run(["step", "--batch-size", bs, "--compile"])
    # the label audit's recording at Clothing1M's size, side by side with the plain step
    r["step_audit"] = _run(["step", "--batch-size", bs, "--audit", "1000000", "--rounds", "6"])
    r["loader"] = _run(["loader", "--root", str(root), "--backends", ",".join(backends), "--device", "cuda",
                        "--batch-size", bs, "--workers", "8", "--threads", "8", "--batches", "10", "--repeats", "1"])
    r["train"] = _run(["train", "--root", str(root), "--backends", ",".join(backends), "--batch-size", bs,
                       "--workers", "8", "--steps", "10", "--warmup", "3"])
    for dtype in ("fp32", "bf16"):
        r[f"kernel_{dtype}"] = _run(["kernel", "--dtype", dtype, "--repeats", "10"])
    r["sampler"] = _run(["sampler", "--sizes", "4096,16384"])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    md = [f"# gpu-check: {report['gpu']}, {report['date']}, commit {report['commit']}", "",
          f"torch {report['torch']} (CUDA {report['cuda']}), Triton {report['triton']}, DALI {report['dali']}, "
          f"FFCV {report['ffcv']}, driver {report['driver']}, {report['cpus']} CPUs; {report['seconds']} s", "",
          f"tests: {report.get('tests', 'skipped')}", ""]
    md += [f"skipped {k}: {v}" for k, v in report["skipped"].items()]
    for name, text in r.items():
        md += ["", f"## {name}", "", "```", text.rstrip(), "```"]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _build_data(root: Path, num_train: int, report: dict) -> None:
    """Synthetic Clothing1M-layout JPEGs, converted for each backend whose package imports."""
    from tools.clothing1m_sample import build

    if not (root / "noisy_label_kv.txt").is_file():
        build(root, num_train, 256, 256, synthetic=True, workers=os.cpu_count() or 4)
    from pipelines.formats import beton_path, list_path
    from pipelines.sources import load_split

    splits = {name: load_split("clothing1m", name, root) for name in ("noisy_train", "clean_val", "clean_test")}
    if _version("ffcv") is None:
        report["skipped"]["ffcv"] = "ffcv does not import (README: ship the cp312 wheel)"
    else:
        from tools.beton import convert_split

        for name, split in splits.items():
            if not beton_path(root / "ffcv", "clothing1m", name).is_file():
                convert_split(split, "clothing1m", name, beton_path(root / "ffcv", "clothing1m", name), progress=False)
    if _version("nvidia.dali") is None:
        report["skipped"]["dali"] = "nvidia.dali does not import (README: ship the wheels in parts)"
    else:
        from tools.beton import convert_file_list

        for name, split in splits.items():
            if not list_path(root / "dali", "clothing1m", name).is_file():
                convert_file_list(split, "clothing1m", name, list_path(root / "dali", "clothing1m", name),
                                  progress=False)


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
