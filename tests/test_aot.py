"""The Triton kernels compiled ahead of time for an H100/H200 (sm_90) and an A100 (sm_80), without
a GPU (tools/aot.py): through the project's own launchers, with Triton's own checks of each
compiled kernel against the chip. Each check is shown to catch the defect it guards."""
import pytest

pytest.importorskip("triton")

from tools.aot import CHIPS, FORCED, jobs, run_jobs  # noqa: E402

KERNELS = {"_sc_fwd_kernel", "_sc_bwd_rows_kernel", "_sc_bwd_cols_kernel", "_ms_fwd_kernel",
           "_ms_bwd_anchor_kernel", "_ms_bwd_rows_kernel"}


def test_every_kernel_compiles_and_fits_sm90_and_sm80():
    """The smoke set: every kernel x dtype x arch, and every configuration a test forces."""
    results = run_jobs(jobs([90, 80], ["fp32", "bf16"], every_config=False), workers=2)
    assert [r for r in results if r["error"]] == []
    launches = [(r["arch"], r["dtype"], x) for r in results for x in r["launches"]]
    assert {(a, d, x["kernel"]) for a, d, x in launches} == {(a, d, k) for a in (90, 80) for d in ("fp32", "bf16")
                                                             for k in KERNELS}
    over = [(a, d, x["kernel"], x["config"], x["shared"]) for a, d, x in launches if x["shared"] > CHIPS[a][1]]
    assert over == []
    forced = {(r["arch"], r["config"]) for r in results}
    assert all((a, lbl) in forced for a in (90, 80) for lbl in
               [" ".join(f"{k}={v}" for k, v in c.kwargs.items()) + f" w{c.num_warps} s{c.num_stages}"
                for cs in FORCED.values() for c in cs])


def test_the_checks_catch_what_they_guard():
    """Planted: the old ``_mm`` (a bf16 L_SC backward that does not compile), a tile too big for an
    A100 (Triton's load check refuses it), and both offered to the autotuner, whose pruning keeps
    only the tile that fits on the A100 and both on the H100."""
    import triton

    big = triton.Config({"BM": 128, "BN": 64}, num_warps=8, num_stages=3, maxnreg=255)
    fits = triton.Config({"BM": 64, "BN": 64}, num_warps=8, num_stages=3, maxnreg=255)
    planted, too_big, a100, h100 = run_jobs([(90, "bf16", "L_SC", FORCED["sc"][0], "early_return"),
                                            (80, "fp32", "L_SC", big), (80, "fp32", "L_SC", [big, fits]),
                                            (90, "bf16", "L_SC", [big, fits])], workers=2)
    assert planted["error"] and "same dtype" in planted["error"], planted["error"]
    assert too_big["error"] and "OutOfResources" in too_big["error"], too_big["error"]
    assert a100["error"] is None and h100["error"] is None
    assert {x["config"]["BM"] for x in a100["launches"]} == {64}
    # bf16 at 128 x 64 fits an H100: not pruned there, so the tuner (whose timings are all equal here) may pick it
    assert 128 in {x["config"]["BM"] for x in h100["launches"]}
