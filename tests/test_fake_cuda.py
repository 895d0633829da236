"""The GPU paths on fake CUDA (tools/fakecuda): views, every loader's device hand-off and the
training step run on "cuda" tensors of a CPU-only torch, and record no device mix, no host sync,
no blocking or pageable host-to-device copy and no CPU generator feeding a CUDA random op. One
defect of each kind, planted, is seen."""
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the fake-CUDA extension needs g++")

SCENARIOS = ["views", "loaders_memory", "loaders_files", "loaders_ffcv", "step"]
PLANTED = {"views:pageable": "pageable host-to-device copy", "views:blocking": "blocking host-to-device copy",
           "loaders_files:blocking": "blocking host-to-device copy", "step_lacol:sync": "host sync",
           "step_lacol:mix": "device mix", "step_lacol:generator": "CPU generator",
           "step_semi:teacher_sync": "host sync"}


@pytest.fixture(scope="module")
def results():
    from tools import fakecuda

    return fakecuda.run(SCENARIOS + list(PLANTED))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gpu_path_records_nothing(results, scenario):
    r = results[scenario]
    assert r["error"] is None, r["error"]
    assert r["events"] == [], r["events"][:5]
    assert r["ops"] > 100 and r["checked"]


def test_what_ran(results):
    assert results["views"]["checked"] == {"views": 16}
    assert results["step"]["checked"] == {"settings": 12}
    assert set(results["loaders_files"]["checked"]) == {"train (views on the device)", "train (views in workers)",
                                                        "eval"}


@pytest.mark.parametrize("spec", list(PLANTED))
def test_a_planted_defect_is_seen(results, spec):
    kinds = {e["kind"] for e in results[spec]["events"]}
    assert PLANTED[spec] in kinds, (kinds, results[spec]["error"])
