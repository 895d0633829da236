"""Autotuning that knows the chip: configurations whose compiled kernel cannot run on the current
device are dropped before any is timed, and a forced configuration (tests, ``lacol-bench aot``)
bypasses the tuner."""
from __future__ import annotations

import triton
from triton.runtime import driver


def device_shared_limit() -> int:
    """Shared memory one block may use on the current device (bytes; the opt-in maximum)."""
    return driver.active.utils.get_device_properties(driver.active.get_current_device())["max_shared_mem"]


def prune_to_device(kernel: triton.runtime.JITFunction):
    """``early_config_prune`` for ``triton.autotune(kernel)``: compiles each configuration (the
    compile is cached, so the tuner's timing reuses it) and keeps those whose shared memory fits
    the device, instead of letting a launch fail with OutOfResources (232,448 B per block on
    H100/H200, 166,912 B on A100)."""

    def prune(configs, named_args, **kwargs):
        limit = device_shared_limit()
        args = [named_args[n] for n in kernel.arg_names if n in named_args]
        # the tuner passes its launch keywords too (grid, ...): keep the kernel's own arguments
        meta = {k: v for k, v in kwargs.items() if k in kernel.arg_names and k not in named_args}
        keep = [c for c in configs
                if kernel.warmup(*args, grid=(1,), **meta, **c.all_kwargs()).metadata.shared <= limit]
        if not keep:
            raise RuntimeError(f"{kernel.__name__}: no autotune configuration fits this GPU's {limit:,} bytes of "
                               f"shared memory per block for {meta}")
        return keep

    return prune


def autotuned(kernel, configs, key, **kw):
    """``triton.autotune`` of ``kernel`` over ``configs``, pruned to what the device can run."""
    return triton.autotune(configs, key=key, prune_configs_by={"early_config_prune": prune_to_device(kernel)},
                           **kw)(kernel)


def launch(kernel, tuned, force: triton.Config | None, default: triton.Config, grid, *args, **meta) -> None:
    """``kernel`` with ``force`` (or, under Triton's interpreter, ``default``), else autotuned;
    ``grid(config_kwargs)`` gives the launch grid."""
    interpret = triton.knobs.runtime.interpret
    cfg = force or (default if interpret else None)
    if cfg is not None:  # the interpreter takes no launch options (warps, stages)
        kernel[grid(cfg.kwargs)](*args, **meta, **(cfg.kwargs if interpret else cfg.all_kwargs()))
    else:
        tuned[grid](*args, **meta)
