"""lacol-bench: throughput benchmarks, every contender measured side by side in one run.

    lacol-bench loader --root data/bench_clothing1m [--backends peer,torch,ffcv,dali] [--batches 20]
        samples/s of three views (weak + 2 RandAugment) at 224 px from Clothing1M-layout JPEGs, made
        where training makes them (--device cuda: on the GPU, timed with torch.cuda.synchronize();
        dali: on the GPU when there is one, else DALI's CPU mode)
    lacol-bench convert --root data/bench_clothing1m [--split noisy_train] [--workers 2]
        images/s of converting a Clothing1M-layout split to a .beton (decode, resize, encode, write)
    lacol-bench kernel [--ms-sizes 256,1024,4096,16384] [--sc-sizes 1024,4096,16384]
        forward+backward ms and peak memory of L_MS (K=15, D=128) and L_SC: eager reference,
        torch.compile'd reference and the fused Triton kernels (CUDA; on a CPU only the first two)
    lacol-bench step [--arch resnet50] [--size 224] [--batch-size 256] [--compile]
        samples/s of the real model + method on device-resident synthetic three-view batches (bf16,
        channels_last): the consumption ceiling
    lacol-bench train --root data/bench_clothing1m --backends torch,ffcv,dali
        samples/s of the trainer fed by each real backend, and its ratio to step (same run)
    lacol-bench sampler [--sizes 1024,4096,16384] [--k 15]
        ms per call of the O(B*K) negative sampler beside the B x B argsort it replaced (one run)
    lacol-bench aot [--all] [--arch 90,80] [--dtype fp32,bf16]
        every Triton kernel compiled to cubin for sm_90 and sm_80 without a GPU: shared memory
        against each chip's limit, registers and spills (tools/aot.py)
    lacol-bench parse --lines 1000000
        seconds to parse a Clothing1M-size noisy_train split (1M keys)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
from rich.console import Console
from rich.table import Table


def _time_loader(make, batches: int, warmup: int) -> tuple[float, int]:
    """samples/s over ``batches`` batches after ``warmup`` batches (worker start-up excluded)."""
    it = iter(make())
    for _ in range(warmup):
        next(it)
    n, t = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        n += len(b) if hasattr(b, "__len__") and not isinstance(b, (list, tuple)) else len(b[-1])
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # views made on the GPU are done, not merely queued
    return n / (time.perf_counter() - t), n


def _data_config(a, backend: str):
    """The data config of the loader benchmark: Clothing1M layout, three views at 224 px (crop +
    flip; RandAugment on the strong two), decoded to 256."""
    from pipelines.data_config import DaliOptions, DataConfig, FfcvOptions

    return DataConfig(dataset="clothing1m", root=a.root, backend=backend, noise="none", batch_size=a.batch_size,
                      num_workers=a.workers, image_size=224, decode_size=256, pad=0,
                      ffcv=FfcvOptions(dir=a.ffcv_dir or os.path.join(a.root, "ffcv"), order=a.ffcv_order),
                      dali=DaliOptions(dir=a.dali_dir or os.path.join(a.root, "dali")))


def _loader(split, a, backend: str):
    from pipelines.build import make_loader

    d = _data_config(a, backend)
    device = a.device or ("cuda" if backend == "dali" and torch.cuda.is_available() else "cpu")
    return make_loader(d, split, d.views(), device=device)


def bench_loader(a) -> int:
    from pipelines.build import BACKENDS
    from pipelines.sources import load_split
    from pipelines.sharding import Shard
    from pipelines.torch_loader import TorchLoader
    from pipelines.views import lacol_views
    from tools.peer import peer_loader

    torch.set_num_threads(a.threads)
    split = load_split("clothing1m", "noisy_train", a.root)
    need = (a.batches + a.warmup) * a.batch_size
    if len(split) < need:
        print(f"lacol-bench: {a.root} has {len(split)} train images, the run needs {need}; "
              f"make more with lacol-convert fmnist-clothing1m --num-train {need}", file=sys.stderr)
        return 2
    makers = {
        "peer": lambda: peer_loader(split, a.batch_size, a.workers),
        **{name: (lambda name=name: _loader(split, a, name)) for name in BACKENDS},
        # the reference backend with its views made in this process rather than in its workers
        "torch-augment-in-main": lambda: TorchLoader(split, lacol_views(224), Shard(batch_size=a.batch_size),
                                                     num_workers=a.workers, augment_in="device"),
    }
    unknown = set(a.backends) - set(makers)
    if unknown:
        print(f"lacol-bench: unknown backend(s) {sorted(unknown)}; have {sorted(makers)}", file=sys.stderr)
        return 2
    results = {}
    for rep in range(a.repeats):  # interleaved repeats: a shared machine's drift hits every contender
        for name in a.backends:
            rate, _ = _time_loader(makers[name], a.batches, a.warmup)
            results.setdefault(name, []).append(rate)
    table = Table(title=f"three views/sample, 224 px, batch {a.batch_size}, {a.workers} workers, "
                        f"{a.threads} torch threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    table.add_column("backend")
    table.add_column("samples/s (median)", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("vs peer", justify="right")
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    for name, rate in med.items():
        ratio = f"{rate / med['peer']:.2f}x" if "peer" in med else "-"
        table.add_row(name, f"{rate:.0f}", " ".join(f"{r:.0f}" for r in results[name]), ratio)
    Console().print(table)
    return 0


def bench_parse(a) -> int:
    """Seconds to read a Clothing1M noisy_train split of ``--lines`` keys (lists written to a temp dir)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from pipelines.sources import clothing1m

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        keys = [f"images/{i % 10}/{(i // 10) % 100:02d}/{i:08d}.jpg" for i in range(a.lines)]
        labels = np.random.default_rng(0).integers(0, 14, a.lines)
        (d / "noisy_label_kv.txt").write_text("".join(f"{k} {y}\n" for k, y in zip(keys, labels)))
        clean = a.lines * 72 // 1000  # Clothing1M: 72k clean labels for 1M images
        (d / "clean_label_kv.txt").write_text("".join(f"{k} {y}\n" for k, y in zip(keys[:clean], labels[:clean])))
        (d / "noisy_train_key_list.txt").write_text("".join(f"{k}\n" for k in keys))
        (d / "category_names_eng.txt").write_text("".join(f"class{i}\n" for i in range(14)))
        t = time.perf_counter()
        split = clothing1m.load("noisy_train", d)
        dt = time.perf_counter() - t
    print(f"clothing1m noisy_train, {len(split)} keys ({clean} with clean labels): {dt:.2f} s")
    return 0


def bench_convert(a) -> int:
    """images/s of ``lacol-convert clothing1m --to ffcv`` on one split, written to a temp dir."""
    import tempfile

    from pipelines.sources import load_split
    from tools.beton import convert_split

    split = load_split("clothing1m", a.split, a.root)
    with tempfile.TemporaryDirectory() as tmp:
        r = convert_split(split, "clothing1m", a.split, os.path.join(tmp, "x.beton"), workers=a.workers,
                          progress=False)
    print(f"clothing1m/{a.split}: {len(split)} images in {r.seconds:.2f} s = {r.images_per_s:,.0f} images/s "
          f"({a.workers} workers, {os.cpu_count()} CPUs)")
    return 0


def _time_fwd_bwd(fn, inputs, repeats: int, device: str) -> tuple[float, float]:
    """(median ms of forward+backward, peak MiB above the inputs; nan on CPU)."""
    import statistics

    def once():
        grads = torch.autograd.grad(fn(*inputs), [t for t in inputs if t.requires_grad])
        return grads

    once()  # compile / warm up
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else float("nan")
    return statistics.median(times), peak


def bench_kernel(a) -> int:
    import torch.nn.functional as F

    from lacol.losses import label_similarity, ms_loss, sample_negatives, sc_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fused = device == "cuda"
    if fused:
        from lacol.kernels.ms import ms_loss_fused
        from lacol.kernels.sc import sc_loss_fused
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    d, k, c, tau, rho = 128, 15, 14, 0.2, 0.8

    def ms_ref(z_w, z_s, neg, valid):
        return ms_loss(F.normalize(z_w.float(), dim=1), F.normalize(z_s.float(), dim=1), neg, valid, tau)

    def sc_ref(p, z_s, z_s2):
        return sc_loss(label_similarity(p, rho), z_s.float(), z_s2.float(), tau)

    rows = []
    for name, sizes in (("L_MS", a.ms_sizes), ("L_SC", a.sc_sizes)):
        for b in sizes:
            gen = torch.Generator(device).manual_seed(0)
            if name == "L_MS":
                labels = torch.randint(0, c, (b,), device=device, generator=gen)
                neg, valid = sample_negatives(labels, k, gen)
                z = [torch.randn(b, d, device=device, generator=gen, dtype=dtype).requires_grad_() for _ in range(2)]
                inputs, ref = [*z, neg, valid], ms_ref
                fast = (lambda z_w, z_s, neg, valid: ms_loss_fused(z_w, z_s, neg, valid, tau)) if fused else None
            else:
                p = torch.randn(b, c, device=device, generator=gen).softmax(1)
                z = [F.normalize(torch.randn(b, d, device=device, generator=gen), dim=1).to(dtype).requires_grad_()
                     for _ in range(2)]
                inputs, ref = [p, *z], sc_ref
                fast = (lambda p, z_s, z_s2: sc_loss_fused(p, z_s, z_s2, rho, tau)) if fused else None
            contenders = {"eager": ref, "compiled": torch.compile(ref)}
            if fast is not None:
                contenders["fused"] = fast
            res = {}
            for label, fn in contenders.items():
                try:
                    res[label] = _time_fwd_bwd(fn, inputs, a.repeats, device)
                except torch.OutOfMemoryError:
                    res[label] = (float("nan"), float("nan"))
                    torch.cuda.empty_cache()
            rows.append((name, b, res))
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores; no fused kernels)"
    table = Table(title=f"forward+backward, {a.dtype}, K={k}, D={d}, median of {a.repeats}: {gpu}")
    for col in ("loss", "B", "eager ms", "compiled ms", "fused ms", "eager/fused", "compiled/fused",
                "peak MiB eager", "peak MiB fused"):
        table.add_column(col, justify="right")
    for name, b, res in rows:
        e, cpl, f = (res.get(x, (float("nan"), float("nan"))) for x in ("eager", "compiled", "fused"))
        table.add_row(name, str(b), f"{e[0]:.3f}", f"{cpl[0]:.3f}", f"{f[0]:.3f}", f"{e[0] / f[0]:.2f}x",
                      f"{cpl[0] / f[0]:.2f}x", f"{e[1]:.0f}", f"{f[1]:.0f}")
    Console().print(table)
    return 0


def bench_step(a) -> int:
    from tools.bench_step import step_rate

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    if a.audit:
        import statistics

        from tools.bench_step import audit_cost

        off, on = audit_cost(a.arch, a.size, a.batch_size, device, rows=a.audit, dtype=a.dtype, steps=a.steps,
                             warmup=a.warmup, rounds=a.rounds)
        mo, mn = statistics.median(off), statistics.median(on)
        print(f"step: {a.arch} {a.size} px, batch {a.batch_size} x 3 views, {a.dtype} ({where}); {a.rounds} "
              f"alternating blocks of {a.steps} steps each\n"
              f"  without the audit's recording: {mo:,.1f} samples/s (median; blocks {min(off):,.1f}-{max(off):,.1f})\n"
              f"  with it ({a.audit:,} rows):     {mn:,.1f} samples/s (median; blocks {min(on):,.1f}-{max(on):,.1f})\n"
              f"  with / without: {mn / mo:.3f}")
        return 0
    if a.methods:
        import statistics

        from tools.bench_step import method_costs

        from tools.bench_step import pass_seconds

        methods = a.methods.split(",")
        rates, runs = method_costs(methods, a.arch, a.size, a.batch_size, device, dtype=a.dtype, steps=a.steps,
                                   warmup=a.warmup, rounds=a.rounds, recipe=a.recipe)
        first = statistics.median(rates[methods[0]])
        print(f"step: {a.arch} {a.size} px, batch {a.batch_size}, {a.dtype} ({where}); {a.rounds} rounds of one "
              f"block of {a.steps} steps per method, the order rotating"
              + (f"; settings from {a.recipe}" if a.recipe else ""))
        for m in methods:
            med = statistics.median(rates[m])
            print(f"  {m:<12} {med:,.1f} samples/s (median; blocks {min(rates[m]):,.1f}-{max(rates[m]):,.1f}); "
                  f"step cost {first / med:.3f}x {methods[0]}'s")
        if a.epoch_rows:
            # an epoch of epoch_rows training rows: its steps, plus the eval pass over them for a
            # method that makes one before each epoch (the loss-mixture selection)
            steps = a.epoch_rows // a.batch_size
            passes = {m: runs[m].method.passes_before(runs[m].method.warmup_epochs) for m in methods}
            model = runs[methods[0]].model
            sec = pass_seconds(model, a.epoch_rows, a.size, a.eval_batch_size, device) if any(passes.values()) else 0.0
            epoch = {m: steps * a.batch_size / statistics.median(rates[m]) + (sec if passes[m] else 0.0)
                     for m in methods}
            print(f"epoch of {a.epoch_rows:,} rows ({steps} steps; the eval pass over them, batch "
                  f"{a.eval_batch_size}: {sec:.2f} s, made by {', '.join(m for m in methods if passes[m]) or 'none'})")
            for m in methods:
                share = f"; the pass {sec / epoch[m]:.1%} of it" if passes[m] else ""
                print(f"  {m:<12} {epoch[m]:.2f} s{share}; epoch cost {epoch[m] / epoch[methods[0]]:.3f}x "
                      f"{methods[0]}'s")
        return 0
    rate = step_rate(a.arch, a.size, a.batch_size, device, dtype=a.dtype, compile=a.compile, kernel=a.kernel,
                     steps=a.steps, warmup=a.warmup)
    print(f"step: {a.arch} {a.size} px, batch {a.batch_size} x 3 views, {a.dtype}, compile={a.compile}, "
          f"loss.kernel={a.kernel}: {rate:,.0f} samples/s ({where})")
    return 0


def bench_train(a) -> int:
    import tempfile

    from tools.bench_step import step_rate, train_rate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ceiling = step_rate(a.arch, a.size, a.batch_size, device, dtype="bf16" if device == "cuda" else "fp32",
                        steps=a.steps, warmup=a.warmup)
    table = Table(title=f"trainer fed by each backend: {a.arch} {a.size} px, batch {a.batch_size}, "
                        f"{a.workers} workers, {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}")
    for col in ("source", "samples/s", "vs step"):
        table.add_column(col, justify="right")
    table.add_row("step (synthetic, on device)", f"{ceiling:,.0f}", "1.00")
    with tempfile.TemporaryDirectory() as out:
        for backend in a.backends:
            rate = train_rate(a.root, backend, a.arch, a.size, a.batch_size, workers=a.workers, steps=a.steps,
                              warmup=a.warmup, out_dir=out)
            table.add_row(backend, f"{rate:,.0f}", f"{rate / ceiling:.2f}")
    Console().print(table)
    return 0


def _argsort_negatives(labels: torch.Tensor, k: int, generator: torch.Generator):
    """The sampler ``losses.sample_negatives`` replaced: a B x B random matrix, argsorted per row."""
    b = labels.shape[0]
    scores = torch.rand(b, b, device=labels.device, generator=generator)
    same = labels[:, None] == labels[None, :]
    order = scores.masked_fill(same, -1.0).argsort(dim=1, descending=True)
    count = (~same).sum(1)
    u = torch.rand(b, k, device=labels.device, generator=generator)
    with_repl = (u * count[:, None]).long().clamp_max((count[:, None] - 1).clamp_min(0))
    pos = torch.where(count[:, None] >= k, torch.arange(k, device=labels.device).expand(b, k), with_repl)
    return order.gather(1, pos), count > 0


def bench_sampler(a) -> int:
    import statistics

    from lacol.losses import sample_negatives

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(a.threads)
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {a.threads} threads of {os.cpu_count()}"
    table = Table(title=f"negative sampler, K={a.k}, {a.classes} classes, median of {a.repeats}: {where}")
    for col in ("B", "O(B*K) ms", "B x B argsort ms", "speed-up"):
        table.add_column(col, justify="right")
    for b in a.sizes:
        gen = torch.Generator(device).manual_seed(0)
        labels = torch.randint(0, a.classes, (b,), device=device, generator=gen)
        res = {}
        for name, fn in (("new", sample_negatives), ("old", _argsort_negatives)):
            times = []
            for _ in range(a.repeats + 1):  # the first call warms up
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn(labels, a.k, gen)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t) * 1e3)
            res[name] = statistics.median(times[1:])
        table.add_row(str(b), f"{res['new']:.3f}", f"{res['old']:.3f}", f"{res['old'] / res['new']:.1f}x")
    Console().print(table)
    return 0


def parser() -> argparse.ArgumentParser:
    """lacol-bench's command line (``make gpu-check --dry-run`` parses its commands with it)."""
    p = argparse.ArgumentParser(prog="lacol-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("loader", help="three-view loader throughput")
    s.add_argument("--root", default="data/bench_clothing1m")
    s.add_argument("--backends", type=lambda v: v.split(","), default=["peer", "torch"])
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the main process")
    s.add_argument("--batches", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--ffcv-dir", default=None, help="where clothing1m_noisy_train.beton is (default ROOT/ffcv; "
                   "make it with lacol-convert clothing1m --to ffcv --root ROOT --out ROOT/ffcv)")
    s.add_argument("--dali-dir", default=None, help="where clothing1m_noisy_train.dali.txt is (default ROOT/dali; "
                   "make it with lacol-convert clothing1m --to dali --root ROOT --out ROOT/dali)")
    s.add_argument("--ffcv-order", default="quasi_random", choices=("quasi_random", "random"))
    s.add_argument("--device", default=None, help="where the views are made (default: the CPU; dali: the GPU)")
    s = sub.add_parser("step", help="the consumption ceiling: model + method on device-resident batches")
    s.add_argument("--arch", default="resnet50")
    s.add_argument("--size", type=int, default=224)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    s.add_argument("--compile", action="store_true")
    s.add_argument("--kernel", choices=("torch", "triton", "auto"), default="torch")
    s.add_argument("--device", default=None)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--audit", type=int, default=0, metavar="ROWS",
                   help="time the step without and with the label audit's recording into ROWS rows, side by side")
    s.add_argument("--rounds", type=int, default=5, help="with --audit or --methods: alternating blocks of each")
    s.add_argument("--methods", default="", metavar="A,B",
                   help="time these methods' steps side by side (e.g. lacol,lacol_semi,ce_strong), with their defaults")
    s.add_argument("--recipe", default=None, help="with --methods: the methods' settings from this recipe's "
                   "methods: blocks (e.g. configs/fashion_mnist.yaml)")
    s.add_argument("--epoch-rows", type=int, default=0, metavar="N",
                   help="with --methods: also the cost of an epoch of N rows, with the eval pass a method makes "
                        "over them before it")
    s.add_argument("--eval-batch-size", type=int, default=512, help="with --epoch-rows: the eval pass's batch")
    s = sub.add_parser("train", help="the trainer fed by real backends, beside the step ceiling")
    s.add_argument("--root", default="data/bench_clothing1m")
    s.add_argument("--backends", type=lambda v: v.split(","), default=["torch"])
    s.add_argument("--arch", default="resnet50")
    s.add_argument("--size", type=int, default=224)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--workers", type=int, default=8)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--warmup", type=int, default=5)
    s = sub.add_parser("sampler", help="the O(B*K) negative sampler beside the B x B argsort it replaced")
    s.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1024, 4096, 16384])
    s.add_argument("--k", type=int, default=15)
    s.add_argument("--classes", type=int, default=14)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--repeats", type=int, default=5)
    s = sub.add_parser("parse", help="seconds to read a Clothing1M-size split's label lists")
    s.add_argument("--lines", type=int, default=1_000_000)
    s = sub.add_parser("convert", help="images/s of converting a Clothing1M-layout split to .beton")
    s.add_argument("--root", default="data/bench_clothing1m")
    s.add_argument("--split", default="noisy_train")
    s.add_argument("--workers", type=int, default=os.cpu_count())
    s = sub.add_parser("kernel", help="fused L_MS / L_SC kernels beside the eager and compiled reference")
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    s.add_argument("--ms-sizes", type=ints, default=[256, 1024, 4096, 16384])
    s.add_argument("--sc-sizes", type=ints, default=[1024, 4096, 16384])
    s.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    s.add_argument("--repeats", type=int, default=20)
    s = sub.add_parser("scale", help="every host-side phase at Clothing1M sizes, side by side (tools/bench_scale.py)")
    s.add_argument("--rows", type=ints, default=[10_000, 100_000, 1_000_000])
    s.add_argument("--root", default="data/scale", help="where the layouts are built (once) and kept")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--ranks", type=int, default=64)
    s.add_argument("--no-convert", action="store_true", help="skip the .beton and DALI list conversions (and ffcv)")
    s.add_argument("--no-ffcv", action="store_true", help="skip the ffcv loader phases")
    s.add_argument("--json", default=None, help="also write the figures here")
    from .aot import add_parser as add_aot
    from .bench_audit import add_parser

    add_parser(sub)
    add_aot(sub)
    return p


def bench_scale(a) -> int:
    from .bench_scale import main as scale

    return scale(a)


def main(argv=None) -> int:
    from .aot import bench_aot
    from .bench_audit import bench_audit

    p = parser()
    a = p.parse_args(argv)
    if a.cmd == "audit":
        if a.folds < 2 or a.jobs < 1 or not 0 < a.rate < 1:
            p.error("audit: --folds >= 2, --jobs >= 1, --rate in (0, 1)")
    from lacol.config import ConfigError
    from pipelines.sources import DatasetError

    fn = {"loader": bench_loader, "parse": bench_parse, "convert": bench_convert, "kernel": bench_kernel,
          "sampler": bench_sampler, "step": bench_step, "train": bench_train, "audit": bench_audit,
          "aot": bench_aot, "scale": bench_scale}[a.cmd]
    try:
        return fn(a)
    except (DatasetError, ConfigError, FileNotFoundError) as e:  # a bad --root or recipe: one line
        print(f"lacol-bench {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
