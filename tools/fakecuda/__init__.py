"""Fake CUDA: the project's GPU code paths run on a CPU-only torch, with every device mix, host
sync, blocking or pageable host-to-device copy and CPU generator feeding a CUDA random op
recorded.

How: ``fakecuda.cpp`` (built here by g++ against the installed torch, once per torch version)
registers c10's FakeGuardImpl for CUDA and CUDA hooks that say CUDA is built; it is loaded before
torch is imported, so it runs in its own process (``python -m tools.fakecuda``). There, tensors on
"cuda" are FakeTensorMode tensors (shapes, dtypes and devices, no data), and ``Recorder`` (a
dispatch mode above it) sees every aten op first. ``torch.cuda.is_available()`` stays False.

``run(specs)`` runs scenarios (``scenarios.SCENARIOS``) in that process and returns their
events; a spec ``SCENARIO:PLANT`` plants one defect of a kind (``scenarios.PLANTS``) first, to
show the check catches it. Used by tests/test_fake_cuda.py and ``make gpu-check``'s dry run.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "fakecuda.cpp"


def _torch_dir() -> Path:
    return Path(importlib.util.find_spec("torch").origin).parent


def library() -> Path:
    """The built extension (built on first use, cached by source and torch build; ~20 s)."""
    torch_dir = _torch_dir()
    key = hashlib.sha256(SOURCE.read_bytes() + str(torch_dir).encode()
                         + (torch_dir / "lib" / "libtorch_cpu.so").stat().st_mtime_ns.to_bytes(8, "little"))
    cache = Path(os.environ.get("LACOL_CACHE", Path.home() / ".cache" / "lacol"))
    out = cache / f"libfakecuda-{key.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    cmd = ["g++", "-shared", "-fPIC", "-O1", "-std=c++20", "-w", f"-I{torch_dir / 'include'}",
           f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}", str(SOURCE),
           f"-L{torch_dir / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(tmp)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RuntimeError("the fake-CUDA check needs g++ (apt-get install g++)") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"building {SOURCE.name} failed:\n{e.stderr[-2000:]}") from e
    os.replace(tmp, out)
    return out


def run(specs: list[str], timeout: float = 600) -> dict:
    """{spec: {"events": [...], "error": str | None, "checked": {...}, "ops": n}} from one process."""
    lib = library()
    cmd = [sys.executable, "-m", "tools.fakecuda", "--lib", str(lib), *specs]
    root = HERE.parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"fake-CUDA process exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])
