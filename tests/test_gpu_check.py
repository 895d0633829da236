"""``make gpu-check``'s dry run, as on the GPU host (no DALI, no FFCV, no dataset): every command
parses, the skipped backends are named, the report is written as each step finishes, and a
failing step is recorded while the rest go on."""
import json
import subprocess
import sys

from tools import gpu_check


def test_the_dry_run_writes_its_report(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tools.gpu_check", str(tmp_path), "--dry-run", "--without", "nvidia,ffcv"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["skipped"]) == {"dali", "ffcv"} and report["errors"] == {}
    assert report["dali"] is None and report["ffcv"] is None and report["dry_run"]
    names = set(gpu_check.measurements(tmp_path, ["torch"], 256))
    assert names | {"data"} == set(report["results"])
    assert all(v.startswith("dry run") for v in report["results"].values())
    md = (tmp_path / "gpu_check.md").read_text()
    assert "skipped dali" in md and "## kernel_bf16" in md and "--backends torch " in md


def test_a_failing_measurement_is_recorded_and_the_rest_go_on(tmp_path, monkeypatch):
    real = gpu_check.measurements

    def planted(root, backends, bs):
        m = real(root, backends, bs)
        m["step"] = ["step", "--no-such-option"]  # the planted failure: first in the order
        return m

    monkeypatch.setattr(gpu_check, "measurements", planted)
    monkeypatch.setattr(gpu_check, "HIDDEN", set())
    assert gpu_check.main([str(tmp_path), "--dry-run", "--skip-tests"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["errors"]) == ["step"] and "does not parse" in report["errors"]["step"]
    assert {"step_compiled", "sampler", "kernel_fp32"} <= set(report["results"])
    assert "FAILED step" in (tmp_path / "gpu_check.md").read_text()
