"""``lacol-bench scale``: every host-side phase of a Clothing1M-size run, measured at several row
counts side by side, with the growth factor between the last two.

The data (built once per row count, cached under ``--root``): a Clothing1M release layout whose
``images/`` hold N hard links to a pool of distinct real JPEGs (``--pool``, 32 px Fashion-MNIST
crops or synthetic blobs, encoded by PIL), so file-system lookups, opens and decodes are real
while the disk holds only the pool; the list files are those of the release (N noisy labels,
a clean subset, clean val/test of 1,000 images each).

Phases: the list parse; ``train_and_val``; conversion to .beton and to the checked DALI list
(images/s); loader construction and time to the first batch, then one epoch (torch backend
with 2 workers: samples/s, the main process's peak RSS and each worker's PSS after the pass,
from ``/proc/PID/smaps_rollup``; ffcv); the per-epoch host work of 64 ranks (permutation and
dealing, computed in one process, with the check that every row is dealt at most once and every
rank gets the same batch count); the label audit's record (bytes, checkpoint write and read) and
``lacol audit``'s analysis over it.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot", "Hoodie", "Skirt", "Scarf", "Vest")  # Clothing1M has 14 classes


def key(i: int) -> str:
    """The i-th image key, in the release's ``images/<a>/<bc>/<name>.jpg`` shape."""
    return f"images/{i % 10}/{(i // 10) % 100:02d}/{i:08d}.jpg"


def build(root: Path, n: int, pool: int = 2000, seed: int = 0) -> Path:
    """The layout for ``n`` training rows under ``root/n``, reused when complete."""
    out = root / str(n)
    if (out / ".complete").is_file():
        return out
    from PIL import Image

    shutil.rmtree(out, ignore_errors=True)
    pool_dir = root / f"pool{pool}"
    if not (pool_dir / ".complete").is_file():
        pool_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        try:
            from pipelines.sources import fashion_mnist

            pix = fashion_mnist.load("train").images[:pool, ..., 0]
        except Exception:  # no Fashion-MNIST on this host: blobs
            pix = (rng.random((pool, 28, 28)) * 255).astype(np.uint8)
        for j in range(pool):
            rgb = np.repeat(pix[j][..., None], 3, 2)
            Image.fromarray(rgb).resize((32, 32)).save(pool_dir / f"{j:05d}.jpg", quality=90)
        (pool_dir / ".complete").touch()
    total = n + 2000  # plus clean val and test
    for a in range(10):
        for bc in range(100):
            (out / "images" / str(a) / f"{bc:02d}").mkdir(parents=True, exist_ok=True)
    pools = [str(pool_dir / f"{j:05d}.jpg") for j in range(pool)]
    for i in range(total):
        os.link(pools[i % pool], out / key(i))
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, len(CLASSES), total)
    noisy = np.where(rng.random(total) < 0.38, rng.integers(0, len(CLASSES), total), clean)
    keys = [key(i) for i in range(total)]
    clean_train = np.flatnonzero(rng.random(n) < 0.05)  # Clothing1M: ~7% of the noisy rows also have clean labels
    write = lambda name, lines: (out / name).write_text("".join(f"{line}\n" for line in lines))  # noqa: E731
    write("noisy_label_kv.txt", (f"{keys[i]} {noisy[i]}" for i in range(n)))
    clean_rows = [*clean_train.tolist(), *range(n, total)]
    write("clean_label_kv.txt", (f"{keys[i]} {clean[i]}" for i in clean_rows))
    write("noisy_train_key_list.txt", keys[:n])
    write("clean_train_key_list.txt", (keys[i] for i in clean_train))
    write("clean_val_key_list.txt", keys[n:n + 1000])
    write("clean_test_key_list.txt", keys[n + 1000:])
    write("category_names_eng.txt", CLASSES)
    (out / ".complete").touch()
    return out


def _memory_mb(pid: int) -> dict[str, float]:
    """A process's memory in MB from /proc/PID/smaps_rollup: ``Pss`` counts a 1/k share of each
    page k processes map; ``Pss_Anon`` the same over anonymous memory only (the heap a fork
    shares copy-on-write: what a worker's copies grow), without ``Pss_Shmem`` (the shared-memory
    batches in flight to the main process, which come and go with the prefetch)."""
    m = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Pss", "Pss_Anon", "Pss_Shmem", "Private_Clean", "Private_Dirty"):
            m[k] = int(v.split()[0]) / 1024
    return m


def _children() -> list[int]:
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def worker_memory(root: Path, n: int, *, workers: int = 2, batch: int = 256, pool: int = 2000) -> dict:
    """The torch backend over ``n`` rows of ``build``'s layout, weak view only: seconds to the
    first batch, then one whole pass, and each worker's PSS and USS (MB) at its end."""
    from lacol.config import load_config
    from pipelines.build import make_loader, train_and_val

    cfg = load_config(None, ["data.dataset=clothing1m", f"data.root={build(root, n, pool)}", "data.noise=none",
                             "data.val_size=0", f"data.batch_size={batch}", f"data.num_workers={workers}",
                             "data.decode_size=32", "data.image_size=32", "data.pad=0"])
    t0 = time.perf_counter()
    train, _ = train_and_val(cfg.data)
    loader = make_loader(cfg.data, train, cfg.data.views(), seed=0)
    loader.set_epoch(0, num_views=1)
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    seen, mem, t1 = batch, {}, time.perf_counter()
    for b in it:
        seen += len(b)
        if not mem and seen >= len(train) - 2 * batch:
            mem = {p: _memory_mb(p) for p in _children()}
    rate = (seen - batch) / (time.perf_counter() - t1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_batch_s": first, "samples_per_s": rate, "main_peak_rss_mb": peak, "pss_mb": max(v["Pss"] for v in mem.values()),
            "pss_anon_mb": max(v["Pss_Anon"] for v in mem.values()),
            "pss_shmem_mb": max(v.get("Pss_Shmem", 0.0) for v in mem.values()),
            "uss_mb": max(v["Private_Clean"] + v["Private_Dirty"] for v in mem.values()), "rows": seen}


def plant_old_ways() -> None:
    """The loader as it was before the scale fixes, for before/after figures and the test that
    shows the check catching it: paths as a list of str, the sampler as a list of every row made
    before the workers fork, the parse's freed heap left in place."""
    import pipelines.sources.base as base
    import pipelines.torch_loader as tl

    base.Keys.of = staticmethod(lambda keys: [str(x) for x in keys])
    tl._Numbered = lambda numbered: [(n, c.tolist()) for n, c in numbered]
    tl.trim_heap = lambda: None


def worker_memory_fresh(root: Path, n: int, *, pool: int = 2000, old_ways: bool = False) -> dict:
    """``worker_memory`` in a fresh process (what an earlier measurement left in this one would
    be shared into the new workers)."""
    import subprocess
    import sys

    code = ("import json, sys; from pathlib import Path; import tools.bench_scale as b; "
            f"{'b.plant_old_ways(); ' if old_ways else ''}"
            f"print(json.dumps(b.worker_memory(Path({str(root)!r}), {n}, pool={pool})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed(fn):
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(root: Path, n: int, *, convert: bool = True, ffcv: bool = True, workers: int = 2,
            batch: int = 256, ranks: int = 64, epochs: int = 6) -> dict:
    """Every phase at ``n`` rows: {phase: (seconds or MB, unit)}."""
    import torch

    from lacol.audit import Evidence, analyse
    from lacol.config import load_config
    from pipelines.build import make_loader, train_and_val
    from pipelines.sharding import shard_indices
    from pipelines.sources import clothing1m

    data = build(root, n)
    r: dict[str, tuple[float, str]] = {}
    split, r["list parse"] = _timed(lambda: clothing1m.load("noisy_train", data))
    r["list parse"] = (r["list parse"], "s")
    cfg = load_config(None, ["data.dataset=clothing1m", f"data.root={data}", "data.noise=none", "data.val_size=0",
                             f"data.batch_size={batch}", f"data.num_workers={workers}", "data.decode_size=32",
                             "data.image_size=32", "data.pad=0", f"data.ffcv.dir={data}/ffcv",
                             f"data.dali.dir={data}/dali"])
    d = cfg.data
    (train, _), t = _timed(lambda: train_and_val(d))
    r["train_and_val"] = (t, "s")
    if convert:
        from tools.beton import convert_dataset, convert_file_list
        from pipelines.formats import list_path

        shutil.rmtree(data / "ffcv", ignore_errors=True)
        shutil.rmtree(data / "dali", ignore_errors=True)
        res, t = _timed(lambda: convert_dataset("clothing1m", str(data), str(data / "ffcv"), ["noisy_train"],
                                                size=32, quality=90, workers=workers, progress=False)[0])
        r["convert to .beton"], r["  .beton images/s"] = (t, "s"), (res.images_per_s, "images/s")
        res, t = _timed(lambda: convert_file_list(split, "clothing1m", "noisy_train",
                                                  list_path(data / "dali", "clothing1m", "noisy_train"),
                                                  workers=workers, progress=False))
        r["convert to DALI list"], r["  DALI list images/s"] = (t, "s"), (res.images_per_s, "images/s")
    # torch backend, in a fresh process (what this one holds would be shared into its workers):
    # parse, loader and first batch, then a whole pass of the weak view
    w = worker_memory_fresh(root, n)
    r["torch: parse, loader, first batch"] = (w["first_batch_s"], "s")
    r["torch: epoch samples/s (weak view, 2 workers)"] = (w["samples_per_s"], "samples/s")
    r["torch: worker PSS after the pass"] = (w["pss_mb"], "MB")
    r["torch: worker PSS of the heap after the pass"] = (w["pss_anon_mb"], "MB")
    r["torch: main process peak RSS"] = (w["main_peak_rss_mb"], "MB")
    if ffcv and convert:
        d.backend = "ffcv"
        loader, t_build = _timed(lambda: make_loader(d, train, d.views(), seed=0))
        loader.set_epoch(0, num_views=1)
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        r["ffcv: loader build"] = (t_build, "s")
        r["ffcv: first batch"] = (time.perf_counter() - t0, "s")
        seen, t0 = 0, time.perf_counter()
        for b in it:
            seen += len(b)
        r["ffcv: epoch samples/s (weak view)"] = (seen / (time.perf_counter() - t0), "samples/s")
        del loader, it

    def deal():
        return [shard_indices(n, rank, ranks, 1, 0, shuffle=True, drop_last=True, batch_size=batch // 8)
                for rank in range(ranks)]

    shards, t = _timed(deal)  # what each rank computes at an epoch start (here all 64, one after another)
    dealt = np.bincount(np.concatenate(shards), minlength=n)
    assert len({len(s) for s in shards}) == 1 and dealt.max() <= 1, "a row dealt twice or unequal batch counts"
    r[f"{ranks} ranks: permutation and dealing, per rank"] = (t / ranks, "s")
    ev = Evidence(n, 0, epochs, "cpu")
    rows = torch.from_numpy(np.random.default_rng(0).permutation(n))
    labels = torch.from_numpy(train.labels)
    p = torch.rand(batch, len(CLASSES)).softmax(1)

    def record_epoch():
        for s in range(0, n - batch + 1, batch):
            ev.record(0, rows[s:s + batch], p, labels[rows[s:s + batch]], None)

    _, t = _timed(record_epoch)
    r["audit record: bookkeeping per epoch"] = (t, "s")
    ev.prob[1:] = ev.prob[0]  # every epoch recorded, as at the end of a run
    ev.code[1:] = ev.code[0]
    tensors = ev.combined(1)
    r["audit record: bytes"] = (sum(v.numel() * v.element_size() for v in tensors.values()) / 2**20, "MB")
    from safetensors.torch import load_file, save_file

    ck = root / f".ckpt_{n}.safetensors"
    _, t = _timed(lambda: save_file(tensors, str(ck)))
    r["audit record: checkpoint write"] = (t, "s")
    _, t = _timed(lambda: load_file(str(ck)))
    r["audit record: checkpoint read"] = (t, "s")
    r["audit record: checkpoint file"] = (ck.stat().st_size / 2**20, "MB")
    ck.unlink()
    code = tensors["audit.code"].numpy()
    rec = {"prob": tensors["audit.prob"].numpy().astype(np.float16), "pred": np.maximum(code // 2, 0).astype(np.int16),
           "seen": code >= 0, "labels": train.labels.astype(np.int16), "clean": train.clean_labels.astype(np.int16),
           "rows": train.source_index, "epochs": np.arange(epochs), "classes": np.array(CLASSES),
           "method": np.array("lacol")}
    _, t = _timed(lambda: analyse(rec))
    r["lacol audit: analysis"] = (t, "s")
    return r


def table(results: dict[int, dict]) -> str:
    ns = sorted(results)
    phases = list(results[ns[0]])
    head = " | ".join(f"{n:,} rows" for n in ns)
    growth = f"{ns[-2]:,} → {ns[-1]:,}" if len(ns) > 1 else ""
    rows = [f"| phase | unit | {head} | growth {growth} |", "|---|---|" + "---:|" * (len(ns) + 1)]
    for ph in phases:
        unit = results[ns[0]][ph][1]
        vals = [results[n].get(ph, (float("nan"), unit))[0] for n in ns]
        cells = [f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}" for v in vals]
        g = vals[-1] / vals[-2] if len(ns) > 1 and vals[-2] else float("nan")
        rows.append(f"| {ph} | {unit} | {' | '.join(cells)} | {g:.1f}x |")
    return "\n".join(rows)


def main(a) -> int:
    root = Path(a.root)
    results = {}
    for n in a.rows:
        results[n] = measure(root, n, convert=not a.no_convert, ffcv=not a.no_ffcv, workers=a.workers,
                             batch=a.batch_size, ranks=a.ranks)
        print(f"{n:,} rows: " + json.dumps({k: round(v[0], 4) for k, v in results[n].items()}), flush=True)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps({str(n): r for n, r in results.items()}, indent=1))
    return 0
