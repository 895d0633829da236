"""Triton kernels compiled ahead of time for a named GPU, on a machine without one.

``target(arch)`` makes Triton's compiler and launch path believe an NVIDIA GPU of compute
capability ``arch`` (90: H100/H200, 80: A100) is the current device: the project's own launchers
(``lacol.kernels.ms``/``sc``: the real argument binding, specialisation, autotuning and pruning)
run on host tensors, every kernel is compiled by Triton to cubin with the ptxas of its wheel,
and Triton's own load step checks it against the chip (shared memory per block, threads), as on
the GPU. Only the final launch is replaced: it records the kernel, its grid and its resources
(registers and the spill stack from ``cuobjdump --dump-resource-usage``) instead of running.

``lacol-bench aot`` prints the table (every kernel x dtype x arch x autotune configuration with
``--all``); ``tests/test_aot.py`` runs the smoke set in CI.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime import driver as _driver

CHIPS = {90: ("H100/H200", 232_448, 132), 80: ("A100", 166_912, 108)}
"""arch -> (chips, shared memory per block in bytes (opt-in maximum), SMs)."""


@dataclass
class Launch:
    """One kernel launch as the GPU would have received it."""
    kernel: str
    arch: int
    grid: tuple[int, int, int]
    config: dict
    num_warps: int
    num_stages: int
    shared: int
    regs: int
    stack: int

    @property
    def fits(self) -> bool:
        return self.shared <= CHIPS[self.arch][1]


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread: ptxas's spills) of a cubin's one function."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    regs, stack = re.search(r"REG:(\d+)\s+STACK:(\d+)", out).groups()
    return int(regs), int(stack)


class _Utils:
    def __init__(self, drv: "AotDriver"):
        self.drv = drv

    def get_device_properties(self, device):
        _, shared, sms = CHIPS[self.drv.arch]
        return {"max_shared_mem": shared, "multiprocessor_count": sms, "max_num_regs": 65536, "warpSize": 32,
                "sm_clock_rate": 1_755_000, "mem_clock_rate": 2_619_000, "mem_bus_width": 5120}

    def load_binary(self, name, cubin, shared, device):
        regs, stack = _resources(cubin)
        self.drv.resources[name, len(cubin), hash(cubin)] = (regs, stack)
        return None, (name, len(cubin), hash(cubin)), regs, stack, 1024


class AotDriver(DriverBase):
    """Triton's driver interface for a GPU that is not there (see the module docstring)."""

    def __init__(self, arch: int):
        self.arch = arch
        self.utils = _Utils(self)
        self.resources: dict = {}
        self.launches: list[Launch] = []
        drv = self

        class Launcher:
            def __init__(self, src, metadata):
                self.name = src.name
                self.config = {src.fn.arg_names[k[0]]: v for k, v in src.constants.items()
                               if isinstance(v, (int, bool)) and src.fn.arg_names[k[0]].isupper()}
                self.md = metadata

            def __call__(self, gx, gy, gz, stream, function, *args):
                regs, stack = drv.resources[function]
                drv.launches.append(Launch(self.name, drv.arch, (gx, gy, gz), self.config, self.md.num_warps,
                                           self.md.num_stages, self.md.shared, regs, stack))

        self.launcher_cls = Launcher

    @classmethod
    def is_active(cls):
        return False

    def map_python_to_cpp_type(self, ty):
        from triton.backends.nvidia.driver import ty_to_cpp

        return ty_to_cpp(ty)

    def get_current_target(self):
        return GPUTarget("cuda", self.arch, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def get_current_device(self):
        return 0

    def set_current_device(self, device):
        pass

    def get_current_stream(self, device=None):
        return 0

    def get_benchmarker(self):
        def bench(fn, quantiles=None, **_):  # the autotuner's timing: every config "takes" the same
            fn()
            return [1.0, 1.0, 1.0] if quantiles else 1.0
        return bench

    def get_device_interface(self):
        return torch.cuda

    def get_empty_cache_for_benchmark(self):
        return torch.empty(1)

    def clear_cache(self, cache):
        pass


def _kernels():
    from lacol.kernels import ms, sc

    jit = [v for m in (ms, sc) for v in vars(m).values() if isinstance(v, triton.runtime.JITFunction)]
    tuned = [v for m in (ms, sc) for v in [*vars(m).values(), *getattr(m, "_tuned", {}).values()]
             if isinstance(v, triton.runtime.Autotuner)]
    return jit, tuned


@contextmanager
def target(arch: int):
    """Triton compiles and "launches" for compute capability ``arch`` inside the block; yields the
    driver, whose ``launches`` lists what ran. Kernel and autotune caches are emptied on entry and
    exit, so nothing compiled for one chip is reused for another or for the real device."""
    if arch not in CHIPS:
        raise ValueError(f"arch {arch}: one of {sorted(CHIPS)}")
    jit, tuned = _kernels()

    def reset():
        from triton.compiler import compiler

        compiler.max_shared_mem.cache_clear()  # cached per device index, not per chip
        for k in jit:
            k.device_caches.clear()
        for t in tuned:
            t.cache.clear()

    previous, always = _driver._active, triton.knobs.compilation.always_compile
    drv = AotDriver(arch)
    reset()
    _driver.set_active(drv)
    # Compiled afresh: Triton's disk cache has served a kernel compiled before a jit helper it
    # calls was replaced (a planted defect went unseen), so the check never reads it.
    triton.knobs.compilation.always_compile = True
    try:
        yield drv
    finally:
        _driver._active, triton.knobs.compilation.always_compile = previous, always
        reset()


@contextmanager
def forced(module, config: triton.Config | None):
    """Launch ``module``'s kernels (``lacol.kernels.ms`` or ``sc``) with ``config`` inside the block."""
    before, module.FORCE = module.FORCE, config
    try:
        yield
    finally:
        module.FORCE = before


def sc_case(dtype: torch.dtype, b: int = 256, c: int = 14, d: int = 128) -> None:
    """L_SC's forward and both backward kernels through the project's launchers, at a training
    step's shapes (a local batch of ``b``, ``c`` classes, ``d``-dim embeddings)."""
    from lacol.kernels import sc

    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(b, c, generator=g), 1)
    z = [torch.randn(b, d, generator=g).to(dtype) for _ in range(3)]
    loss, lse, wsum, own = sc._forward(p, p, *z, 0.8, 0.2, 0, True)
    sc._backward(torch.ones(b), p, p, *z, lse, wsum, own, 0.8, 0.2, 0, True)


def ms_case(dtype: torch.dtype, deterministic: bool, b: int = 256, d: int = 128, k: int = 15) -> None:
    """L_MS's kernels (forward, backward by atomics or by the reverse index) through the
    project's launchers."""
    from lacol.kernels import ms

    g = torch.Generator().manual_seed(0)
    zw, zs = (torch.randn(b, d, generator=g).to(dtype) for _ in range(2))
    neg = torch.randint(0, b, (b, k), generator=g)
    loss, lse, u = ms._forward(zw, zs, neg, 0.2, 0)
    ms._backward(torch.ones(b), zw, zs, neg, lse, u, 0.2, 0, deterministic)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cases():
    """(name, module name, callable(dtype)) of every kernel path."""
    return [("L_SC", "sc", sc_case), ("L_MS atomic", "ms", lambda dt: ms_case(dt, False)),
            ("L_MS deterministic", "ms", lambda dt: ms_case(dt, True))]


def compile_case(arch: int, fn, dtype, module=None, config=None) -> tuple[list[Launch], str | None]:
    """Run one case for ``arch`` (with ``config`` forced on ``module``): its launches, and the
    error that stopped it (a compile error, or OutOfResources from Triton's load check), if any."""
    import contextlib

    with target(arch) as drv, (forced(module, config) if module is not None else contextlib.nullcontext()):
        try:
            fn(dtype)
        except Exception as e:  # the table reports it; the test asserts on it
            lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()] or [""]
            root = e
            while root.__cause__ is not None:  # a CompilationError's message ends at the source caret
                root = root.__cause__
            said = lines[0][:160]
            if root is not e:
                said += f" ... {type(root).__name__}: {str(root).strip()[:200]}"
            elif len(lines) > 1:
                said += f" ... {lines[-1][:200]}"
            return drv.launches, f"{type(e).__name__}: {said}"
    return drv.launches, None


def _config_label(cfg: triton.Config | None) -> str:
    if cfg is None:
        return "tuned"
    return " ".join(f"{k}={v}" for k, v in cfg.kwargs.items()) + f" w{cfg.num_warps} s{cfg.num_stages}"


FORCED = {"ms": [triton.Config({"ANCHORS": a}, num_warps=w) for a, w in ((1, 1), (5, 2), (8, 4))],
          "sc": [triton.Config({"BM": m, "BN": n}, num_warps=w, num_stages=st, maxnreg=255)
                 for m, n, w, st in ((64, 64, 8, 2), (32, 64, 4, 3), (64, 32, 8, 2))]}
"""The configurations tests/test_kernels.py forces (on a GPU they launch as they are, unpruned,
so each must fit every chip); the smoke set compiles each for every arch."""


@triton.jit
def _mm_early_return(x, y, LOWP: tl.constexpr):
    """A defect main had (tests/test_aot.py plants it as ``sc._mm``): a return inside a constexpr
    ``if``, after which Triton still compiles an fp32 x bf16 dot for bf16 inputs."""
    if LOWP:
        return tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
    return tl.dot(x, y, input_precision="tf32x3")


def _job(job):
    """One compile job. ``cfg``: a configuration to force, or a list of them to autotune over
    (the tuner's pruning then decides); ``plant``: "early_return" swaps in ``_mm_early_return``."""
    arch, dtype, case, cfg, *plant = job
    name, module_name, fn = next(c for c in cases() if c[0] == case)
    from lacol.kernels import ms, sc

    module = {"ms": ms, "sc": sc}[module_name]
    mm = sc._mm
    tuners = [t for t in [*getattr(module, "_tuned", {}).values(), getattr(module, "_fwd_tuned", None),
                          getattr(module, "_bwd_tuned", None)] if t is not None]
    configs = [t.configs for t in tuners]
    try:  # a worker runs several jobs: whatever a job plants is undone after it
        if plant == ["early_return"]:
            sc._mm = _mm_early_return
        if isinstance(cfg, list):
            for t in tuners:
                t.configs = cfg
            launches, err = compile_case(arch, fn, DTYPES[dtype])
            cfg = None
        else:
            launches, err = compile_case(arch, fn, DTYPES[dtype], module, cfg)
    finally:
        sc._mm = mm
        for t, c in zip(tuners, configs):
            t.configs = c
    return {"arch": arch, "dtype": dtype, "case": case, "config": _config_label(cfg), "error": err,
            "launches": [vars(x) | {"fits": x.fits} for x in launches]}


def jobs(archs, dtypes, every_config: bool) -> list[tuple]:
    """(arch, dtype, case, config) to compile: every autotune configuration (``every_config``), or
    the smoke set: each case's first configuration in every dtype, and the configurations the
    tests force, in fp32 (the dtype the tests run them in)."""
    from lacol.kernels import ms, sc

    out = []
    for arch in archs:
        for case, module_name, _ in cases():
            configs = {"ms": ms, "sc": sc}[module_name].CONFIGS
            out += [(arch, dt, case, c) for dt in dtypes for c in (configs if every_config else configs[:1])]
            if not every_config and "fp32" in dtypes:
                out += [(arch, "fp32", case, c) for c in FORCED[module_name]]
    return out


def run_jobs(todo, workers: int = 1) -> list[dict]:
    """Each job in its own process (Triton's caches and the active driver stay per process)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    interpret = os.environ.pop("TRITON_INTERPRET", None)  # the workers compile: no interpreter there
    try:
        with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(_job, todo))
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret


def add_parser(sub) -> None:
    s = sub.add_parser("aot", help="every Triton kernel compiled to cubin for sm_90 and sm_80 (no GPU needed)")
    s.add_argument("--arch", type=lambda v: [int(x) for x in v.split(",")], default=[90, 80])
    s.add_argument("--dtype", type=lambda v: v.split(","), default=["fp32", "bf16"])
    s.add_argument("--all", action="store_true", help="every autotune configuration (else the smoke set: each "
                   "kernel's first configuration, and those the tests force)")
    s.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    s.add_argument("--json", help="write the launches as JSON")


def bench_aot(a) -> int:
    """Prints one row per launch and a summary; exit 1 when a kernel fails to compile, or (the
    smoke set, whose configurations launch unpruned) when a launch does not fit its chip."""
    import json

    from rich.console import Console
    from rich.table import Table

    results = run_jobs(jobs(a.arch, a.dtype, a.all), a.jobs)
    table = Table(title="Triton kernels compiled ahead of time (Triton "
                        f"{triton.__version__}; B=256, D=128, C=14, K=15; shared limit: "
                        + ", ".join(f"sm_{k} {v[1]:,} B" for k, v in CHIPS.items() if k in a.arch) + ")")
    for col in ("arch", "dtype", "kernel", "config", "shared B", "fits", "regs", "spill stack B", "error"):
        table.add_column(col, justify="right" if col in ("shared B", "regs", "spill stack B") else "left")
    bad = too_big = 0
    for r in results:
        rows = r["launches"] or [{"kernel": r["case"], "shared": "", "fits": False, "regs": "", "stack": ""}]
        for x in rows:
            cfg = r["config"] if x["kernel"] != "_ms_bwd_rows_kernel" else f"BLOCK_D w{x.get('num_warps', '')}"
            if r["config"] == "tuned" and "config" in x:
                cfg = " ".join(f"{k}={v}" for k, v in x["config"].items())
            table.add_row(f"sm_{r['arch']}", r["dtype"], x["kernel"], cfg, f"{x['shared']:,}" if x["shared"] != ""
                          else "", "yes" if x["fits"] else "NO", str(x["regs"]), str(x["stack"]), "")
            too_big += not x["fits"]
        if r["error"]:
            too_big += "OutOfResources" in r["error"]
            bad += "OutOfResources" not in r["error"]
            table.add_row(f"sm_{r['arch']}", r["dtype"], r["case"], r["config"], "", "NO", "", "", r["error"])
    console = Console(width=200)
    console.print(table)
    console.print(summary(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    print(f"{len(results)} compile jobs: {bad} compile errors, {too_big} launches over the chip's shared memory"
          + (" (with --all: configurations the autotuner prunes on that chip)" if a.all else ""))
    return 1 if bad or (too_big and not a.all) else 0


def summary(results: list[dict]):
    """One row per (arch, dtype, kernel): configurations compiled and fitting, and over the
    fitting ones the shared memory, registers and spill stack."""
    from rich.table import Table

    rows: dict = {}
    for r in results:
        for x in r["launches"]:
            rows.setdefault((r["arch"], r["dtype"], x["kernel"]), []).append(x)
        if r["error"] and r["case"] == "L_SC":  # a kernel that did not load: counted as not fitting
            failed = "_sc_fwd_kernel" if not r["launches"] else None
            for k in ("_sc_fwd_kernel", "_sc_bwd_rows_kernel", "_sc_bwd_cols_kernel"):
                if failed == k or k not in {x["kernel"] for x in r["launches"]}:
                    rows.setdefault((r["arch"], r["dtype"], k), []).append({"fits": False})
    t = Table(title="Summary: configurations that fit, and their resources")
    for col in ("arch", "dtype", "kernel", "fit / compiled", "shared B", "regs", "spill stack B"):
        t.add_column(col)
    span = lambda v: f"{min(v):,}-{max(v):,}" if min(v) != max(v) else f"{v[0]:,}"  # noqa: E731
    for (arch, dtype, kernel), xs in sorted(rows.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2])):
        ok = [x for x in xs if x["fits"]]
        t.add_row(f"sm_{arch}", dtype, kernel, f"{len(ok)} / {len(xs)}", span([x["shared"] for x in ok]) if ok else "",
                  span([x["regs"] for x in ok]) if ok else "", span([x["stack"] for x in ok]) if ok else "")
    return t
