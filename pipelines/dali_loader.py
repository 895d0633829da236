"""DALI backend: one DALI graph per process decodes each image once and makes the three views
from that decode, on the GPU (``device_id`` = the local GPU: nvJPEG through ``device="mixed"``,
augmentation on the GPU) or on the CPU (``device_id=None``: what CI runs). A drop-in for the
reference backend (``data.backend: dali``): ViewBatch/EvalBatch, labels from the split (synthetic
noise applies), ``set_epoch(epoch, start)``.

Graph: file datasets (Clothing1M) are read by ``fn.readers.file(files=..., labels=rows)`` from the
list ``lacol-convert clothing1m --to dali`` checked (files DALI's decoder would fail on are left
out and named in its report), decoded (shorter side to ``decode_size``, central square kept, as
the reference); in-memory datasets (Fashion-MNIST, CIFAR) come from ``fn.external_source`` over
their arrays. Weak view: crop (pad-and-crop via an out-of-bounds slice, or a random window, or
random-resized) + flip. Strong views: the same with their own random draws, then
``nvidia.dali.auto_aug.rand_augment`` (n = ``num_ops``, m = ``magnitude`` of 31 bins; DALI's op
set and ranges, close to but not bit-equal with torchvision's). Normalised, HWC float, handed over
as (B, C, H, W) channels_last.

Order and sharding: each epoch's file list is the reference backend's order for this rank
(``sharding.shard_indices``: one permutation per epoch dealt round-robin, equal full batches),
given to the reader with ``random_shuffle=False`` and one shard. So DALI's own ``shard_id`` /
``num_shards`` / ``stick_to_shard`` / ``pad_last_batch`` are not used: its reader shuffles
through a buffer (``initial_fill``), not a permutation, its shards rotate between epochs unless
stuck, and neither gives the same batches as the other backends nor a place to resume from.
Resuming at batch ``start`` gives the same samples; the views of the resumed batches are drawn
afresh (DALI's generators are per pipeline, not per batch).
"""
from __future__ import annotations

import numpy as np
import torch

from .batch import EpochPosition, EvalBatch
from .sharding import Shard, num_batches, upload, view_batch
from .sources.base import DatasetError, Split
from .views import ViewSpec, eval_view


def _dali():
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise DatasetError("data.backend=dali needs DALI: pip install -e '.[dali]' (nvidia-dali-cuda130)") from e


def dali_check(paths, num_threads: int = 1, batch: int = 64) -> dict[int, str]:
    """The files among ``paths`` that DALI's own image decoder (CPU, the decoder of the graph
    below when it runs on the CPU) refuses, as {position: reason}; PIL opens formats DALI does
    not (a GIF named .jpg), so a PIL check alone lets them through to fail mid-training.
    Synchronous pipelines, ``batch`` files at a time; a batch that fails is re-run one file at a
    time to name the files (a failed pipeline is not reusable, so each retry builds its own)."""
    _dali()
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(num_threads=num_threads, device_id=None, exec_async=False, exec_pipelined=False,
                  prefetch_queue_depth=1)
    def graph():
        return fn.decoders.image(fn.external_source(name="enc", dtype=types.UINT8, ndim=1), device="cpu",
                                 output_type=types.RGB)

    def decodes(chunk: list[int]) -> str | None:
        pipe = graph(batch_size=len(chunk))
        pipe.build()
        try:
            pipe.feed_input("enc", [np.fromfile(paths[i], dtype=np.uint8) for i in chunk])
            pipe.run()
            return None
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            return next((ln for ln in reversed(lines) if "failure" in ln or "rror" in ln), lines[-1] if lines else "")
        finally:
            del pipe

    bad: dict[int, str] = {}
    for s in range(0, len(paths), batch):
        chunk = list(range(s, min(s + batch, len(paths))))
        if decodes(chunk) is None:
            continue
        for i in chunk:
            reason = decodes([i])
            if reason is not None:
                bad[i] = f"DALI's decoder refuses it ({reason})"
    return bad


def _view(fn, types, img, spec: ViewSpec, hw: tuple[int, int], gray: bool):
    """One view of ``img`` (uint8 HWC) as a DALI graph branch, up to (not including) normalising."""
    h, w = hw
    s = spec.size
    if spec.crop == "center":
        out = fn.crop(img, crop=(s, s))
    elif spec.crop == "rrc":
        out = fn.random_resized_crop(img, size=(s, s), random_area=list(spec.rrc_scale),
                                     interp_type=types.INTERP_NN)
    elif spec.pad:
        ys = list(range(-spec.pad, h + spec.pad - s + 1))
        xs = list(range(-spec.pad, w + spec.pad - s + 1))
        start = fn.cast(fn.cat(fn.random.uniform(values=ys, shape=[1]), fn.random.uniform(values=xs, shape=[1])),
                        dtype=types.INT32)
        out = fn.slice(img, start=start, shape=[s, s], axes=[0, 1], out_of_bounds_policy="pad", fill_values=0)
    else:
        out = fn.crop(img, crop=(s, s), crop_pos_x=fn.random.uniform(range=(0.0, 1.0)),
                      crop_pos_y=fn.random.uniform(range=(0.0, 1.0)))
    if spec.flip and spec.crop != "center":
        out = fn.flip(out, horizontal=fn.random.coin_flip())
    if spec.randaugment:
        from nvidia.dali.auto_aug import rand_augment

        if gray:  # DALI's colour ops want RGB; a gray image stays gray through them
            out = fn.color_space_conversion(out, image_type=types.GRAY, output_type=types.RGB)
        out = rand_augment.rand_augment(out, n=spec.num_ops, m=spec.magnitude, shape=[s, s])
        if gray:
            out = fn.color_space_conversion(out, image_type=types.RGB, output_type=types.GRAY)
    if spec.cutout > 0:
        side = max(1, int(spec.cutout * s)) / s
        anchor = fn.random.uniform(range=(-side / 2, 1 - side / 2), shape=[2])
        out = fn.erase(out, anchor=anchor, shape=[side, side], normalized=True, axis_names="HW", fill_value=127)
    return out


class _Epochs:
    """Builds one rank's DALI pipeline for an epoch's rows and runs it to ViewBatch-ready tensors."""

    def __init__(self, split: Split, views, *, batch_size: int, device, num_workers: int, decode_size: int,
                 rows: np.ndarray | None = None, hw_decoder_load: float = 0.65):
        _dali()
        self.split, self.views, self.batch_size = split, tuple(views), batch_size
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # DALI's device_id is an index
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.num_workers, self.decode_size, self.hw_decoder_load = num_workers, decode_size, hw_decoder_load
        self.rows = np.arange(len(split)) if rows is None else rows  # the rows the backend may read
        self.gray = split.channels == 1
        self.hw = split.images.shape[1:3] if split.images is not None else (decode_size, decode_size)

    def pipeline(self, order: np.ndarray, seed: int, num_views: int | None = None):
        """The DALI pipeline (not built) that reads the rows ``order``: every view, or the first
        ``num_views``; on the GPU of ``device`` or on the CPU."""
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device.type == "cuda"
        bs = self.batch_size
        split = self.split

        @pipeline_def(enable_conditionals=True)
        def graph():
            if split.images is None:
                files = [str(split.path(i)) for i in order]
                data, row = fn.readers.file(files=files, labels=[int(i) for i in order], random_shuffle=False,
                                            name="reader")
                # mixed: nvJPEG, hw_decoder_load of the images on the A100/H100 hardware decoder
                img = (fn.decoders.image(data, device="mixed", output_type=types.RGB,
                                         hw_decoder_load=self.hw_decoder_load) if gpu
                       else fn.decoders.image(data, device="cpu", output_type=types.RGB))
                img = fn.resize(img, resize_shorter=self.decode_size, antialias=True)
                img = fn.crop(img, crop=(self.decode_size, self.decode_size))
            else:
                def batches(info):
                    take = order[info.iteration * bs:(info.iteration + 1) * bs]
                    if not len(take):
                        raise StopIteration
                    return list(split.images[take]), [np.array([t], dtype=np.int64) for t in take]

                img, row = fn.external_source(source=batches, num_outputs=2, batch=True, batch_info=True,
                                              layout=["HWC", ""], dtype=[types.UINT8, types.INT64])
                if gpu:
                    img = img.gpu()
            mean = [float(m) for m in split.mean[:split.channels]]
            std = [float(v) for v in split.std[:split.channels]]
            outs = [fn.crop_mirror_normalize(_view(fn, types, img, spec, self.hw, self.gray), dtype=types.FLOAT,
                                             output_layout="HWC", mean=mean, std=std)
                    for spec in self.views[:num_views]]
            return (*outs, row)

        return graph(batch_size=bs, num_threads=self.num_workers, device_id=self.device.index if gpu else None,
                     seed=seed % (2**31 - 1), prefetch_queue_depth=2)

    def run(self, order: np.ndarray, seed: int, num_views: int | None = None):
        """Yield (views as torch tensors, rows) for the rows ``order`` (a multiple of the batch
        size, or the last batch short): every view, or the first ``num_views``."""
        if not len(order):
            return
        split, bs = self.split, self.batch_size
        pipe = self.pipeline(order, seed, num_views)
        pipe.build()
        n_batches = num_batches(len(order), bs)
        for b in range(n_batches):
            try:
                out = pipe.run()
            except RuntimeError as e:
                if split.images is not None:
                    raise
                near = order[b * bs:(b + 3) * bs]  # this batch and the two prefetched behind it
                bad = dali_check([str(split.path(i)) for i in near], self.num_workers)
                named = "; ".join(f"{split.path(near[p])}: {why}" for p, why in bad.items()) or "no file named"
                raise DatasetError(f"DALI failed on a batch of {split.name} ({named}); a file changed since, or was "
                                   f"never, checked: run lacol-convert {split.name.split('/')[0]} --to dali "
                                   f"again (it leaves such files out)") from e
            tensors = [_to_torch(o) for o in out]
            rows = tensors[-1].reshape(-1).long()
            k = min(bs, len(order) - b * bs)  # the reader wraps around to fill a short last batch
            yield [t[:k] for t in tensors[:-1]], rows[:k]
        del pipe


def _to_torch(out) -> torch.Tensor:
    """A DALI TensorList as one torch tensor on the device DALI made it on: the GPU of its
    ``device_id`` for GPU outputs (copied on that device's current torch stream), the CPU for CPU outputs (the rows, which the
    reader and the external source keep on the host). Copied, not shared through DLPack: DALI
    reuses its output buffers at the next ``run()``, which this loader calls while the training
    step's kernels that read the batch may still be queued on the GPU, so a zero-copy view would
    be overwritten under them; the copy is one device-to-device pass on torch's stream."""
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type
    from nvidia.dali.tensors import TensorListGPU

    gpu = isinstance(out, TensorListGPU)
    t = out.as_tensor()
    dev = torch.device("cuda", out.device_id()) if gpu else torch.device("cpu")  # where DALI made it
    dst = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=dev)
    feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream(dev) if gpu else None)
    return dst


def graph_problems(pipe) -> tuple[int, list[str]]:
    """(operators checked, problems) of a DALI pipeline's graph, traced by DALI's front end but
    never built (so a GPU graph is checked on a machine without CUDA): each operator against its
    schema (``nvidia.dali.backend.GetSchema``): its device among the schema's backends, each
    regular input on the device the schema takes for it, argument inputs from CPU nodes, the
    arguments by ``CheckArgs``; then every op spec serialised through a CPU-only
    (``device_id=None``) backend pipeline."""
    from nvidia.dali import backend

    try:
        pipe._build_graph()
    except Exception as e:
        return 0, [f"the graph does not trace: {type(e).__name__}: {e}"]
    problems = []
    for node in pipe._ops:
        op, spec = node._op, node.spec
        name = op._schema.Name()
        schema = backend.GetSchema(name)
        where = f"{node.name} ({name}, {op.device})"
        if op.device not in schema.GetSupportedBackends():
            problems.append(f"{where}: no {op.device} backend (has {', '.join(schema.GetSupportedBackends())})")
        regular = spec.NumRegularInput()
        for i, x in enumerate(node.inputs):
            if i >= regular:
                if x.device != "cpu":
                    problems.append(f"{where}: argument input {x.name} comes from a {x.device} node")
                continue
            want = schema.GetInputDevice(i, x.device, op.device)
            want = "cpu" if want == "mixed" else want  # a mixed operator reads host memory
            if want is not None and want != x.device:
                problems.append(f"{where}: input {i} ({x.name}) is on the {x.device}, the operator takes {want}")
        try:
            schema.CheckArgs(spec)
        except Exception as e:
            problems.append(f"{where}: {e}")
    device_id, pipe._device_id = pipe._device_id, None
    try:
        pipe.serialize()
    except Exception as e:
        problems.append(f"the op specs do not serialise: {type(e).__name__}: {e}")
    finally:
        pipe._device_id = device_id
    return len(pipe._ops), problems


class DaliLoader(EpochPosition):
    """Train loader: an iterable of ViewBatch for one rank, with ``__len__`` and ``set_epoch``.
    ``rows``: the split rows to read (a checked file list; None: all)."""

    def __init__(self, split: Split, views: tuple[ViewSpec, ...], shard: Shard, *, num_workers: int = 2,
                 decode_size: int = 256, rows: np.ndarray | None = None, drop_last: bool = True,
                 hw_decoder_load: float = 0.65):
        self.epochs = _Epochs(split, views, batch_size=shard.batch_size, device=shard.device,
                              num_workers=num_workers, decode_size=decode_size, rows=rows,
                              hw_decoder_load=hw_decoder_load)
        self.shard, self.dtype = shard, shard.dtype
        self.labels = torch.from_numpy(split.labels)
        self.skipped = [] if rows is None else [str(split.files[i]) for i in np.setdiff1d(np.arange(len(split)), rows)]
        self.batch_size, self.drop_last = shard.batch_size, drop_last
        self.set_epoch(0)

    def _order(self) -> np.ndarray:
        rows = self.epochs.rows
        return rows[self.shard.indices(len(rows), self.epoch, shuffle=True, drop_last=self.drop_last)]

    def __len__(self) -> int:
        return num_batches(len(self._order()), self.batch_size)

    def __iter__(self):
        order = self._order()[self.start * self.batch_size:]
        seed = self.shard.view_seed(self.epoch) * 1_000_003 + self.start
        dev = self.epochs.device
        for views, rows in self.epochs.run(order, seed, self.num_views):
            views = [v.permute(0, 3, 1, 2).to(self.dtype) for v in views]  # channels_last kept
            yield view_batch(views, upload(self.labels[rows], dev), upload(rows, dev))


class DaliEvalLoader:
    """Eval loader: centre views as EvalBatch, sequential, sharded without dropping (padding
    repeats indices, which metrics deduplicate)."""

    def __init__(self, split: Split, shard: Shard, *, view_size: int, num_workers: int = 2, decode_size: int = 256,
                 rows: np.ndarray | None = None):
        self.epochs = _Epochs(split, [eval_view(view_size)], batch_size=shard.batch_size, device=shard.device,
                              num_workers=num_workers, decode_size=decode_size, rows=rows)
        self.labels = torch.from_numpy(split.labels)
        self.order = self.epochs.rows[shard.indices(len(self.epochs.rows), 0, shuffle=False, drop_last=False)]
        self.batch_size = shard.batch_size

    def __len__(self) -> int:
        return num_batches(len(self.order), self.batch_size)

    def __iter__(self):
        dev = self.epochs.device
        for (image,), rows in self.epochs.run(self.order, 0):
            yield EvalBatch(image.permute(0, 3, 1, 2), upload(self.labels[rows], dev), upload(rows, dev))
