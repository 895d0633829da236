"""What ``lacol audit`` hands a person and other tools: the review page (checked in a real
browser where Chromium is installed), the issue table, the relabelled key list that trains, and
the run's metrics through Accelerate's trackers."""
import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from lacol.cli import main as lacol
from lacol.config import ConfigError, load_config
from pipelines.build import relabelled
from pipelines.sources import DatasetError

SHORT = ["data.train_subset=2048", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.4", "data.pad=0",
         "data.flip=false", "loss.class_floor=0.3", "optim.epochs=4", "loss.warmup_epochs=2", "train.threads=1",
         "train.progress=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short LaCoL run on Fashion-MNIST with the TensorBoard tracker on."""
    from lacol.train import train

    out = tmp_path_factory.mktemp("review")
    train(load_config(None, [*SHORT, f"train.out_dir={out}", "train.name=r", "train.trackers=tensorboard"]))
    return out / "r"


@pytest.fixture(scope="module")
def page(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("page")
    files = {k: out / n for k, n in (("html", "review.html"), ("csv", "flags.csv"), ("export", "issues.csv"),
                                     ("json", "issues.json"))}
    assert lacol(["audit", "--run", str(run), "--top", "0", "--html", str(files["html"]), "--out", str(files["csv"]),
                  "--export", str(files["export"]), "--per-group", "5"]) == 0
    assert lacol(["audit", "--run", str(run), "--top", "0", "--export", str(files["json"])]) == 0
    return files


def test_the_page_is_self_contained_grouped_and_counted(page):
    text = page["html"].read_text()
    flags = list(csv.DictReader(page["csv"].open()))
    assert int(re.search(r"id='flagged-count'>(\d+)<", text).group(1)) == len(flags)
    counts = [int(c) for c in re.findall(r"data-count='(\d+)'", text)]
    assert sum(counts) == len(flags) and counts == sorted(counts, reverse=True)  # every flag in a group, by size
    thumbs = re.findall(r"<img src='data:image/png;base64,", text)
    assert len(thumbs) == sum(min(5, c) for c in counts)  # at most --per-group each
    assert int(re.search(r"id='shown-count'>(\d+)<", text).group(1)) == len(thumbs)
    assert "http://" not in text and "https://" not in text  # opens from disk, no network
    # the clean labels are known: every card says whether the given label was wrong
    assert text.count("(given label wrong)") + text.count("(given label right)") == len(thumbs)


def test_the_issue_table_follows_cleanlabs_columns(page):
    rows = list(csv.DictReader(page["export"].open()))
    assert list(rows[0]) == ["row", "file", "given_label", "suggested_label", "label_score", "is_label_issue",
                             "clean_label"]
    flags = {int(r["row"]): r for r in csv.DictReader(page["csv"].open())}
    issues = {int(r["row"]): r for r in rows}
    assert len(rows) == 2048 and {k for k, r in issues.items() if r["is_label_issue"] == "True"} == set(flags)
    for k, f in list(flags.items())[:50]:  # label_score is the label's quality: 1 - the audit's score
        assert abs(float(issues[k]["label_score"]) - (1 - float(f["score"]))) < 1e-3
        assert issues[k]["suggested_label"] == f["suggested"] and issues[k]["given_label"] == f["given"]
    as_json = json.loads(page["json"].read_text())
    assert len(as_json) == 2048 and set(as_json[0]) == set(rows[0])
    assert sum(r["is_label_issue"] for r in as_json) == len(flags)


def test_tensorboard_gets_the_metrics_jsonl_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "trackers" / "r"))
    ea.Reload()
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").open() if '"kind": "epoch"' in line]
    got = [e.value for e in ea.Scalars("epoch/test_acc")]
    assert len(got) == len(epochs) == 4
    np.testing.assert_allclose(got, [e["test_acc"] for e in epochs], rtol=1e-6)


def test_a_tracker_without_its_package_is_one_line():
    with pytest.raises(ConfigError, match="train.trackers='comet'"):
        load_config(None, ["train.trackers=comet"])
    import importlib.util

    for name in ("wandb", "mlflow", "aim"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(ConfigError, match=f"needs the {name} package: pip install {name}"):
                load_config(None, [f"train.trackers=tensorboard,{name}"])


def test_relabel_writes_the_suggestions_and_trains(clothing_root, tmp_path):
    """Clothing1M layout: the relabelled key list changes exactly the flagged keys' labels and
    trains one epoch with data.root unchanged."""
    from lacol.train import train
    from pipelines.sources import clothing1m

    small = [f"data.root={clothing_root}", "data.dataset=clothing1m", "data.noise=none", "data.image_size=28", "data.decode_size=32",
             "data.batch_size=16", "data.eval_batch_size=32", "data.num_workers=1", "model.arch=small_cnn",
             "model.width=8", "train.threads=1", "train.progress=false", f"train.out_dir={tmp_path}",
             "train.mixed_precision=no"]
    train(load_config(None, [*small, "optim.epochs=3", "loss.warmup_epochs=1", "train.name=c1m"]))
    out = tmp_path / "relabelled_kv.txt"
    page = tmp_path / "review.html"
    assert lacol(["audit", "--run", str(tmp_path / "c1m"), "--top", "0", "--relabel", str(out),
                  "--export", str(tmp_path / "issues.csv"), "--html", str(page)]) == 0
    # a file dataset's page: each card names its file and shows the decoded JPEG
    text = page.read_text()
    flagged = int(re.search(r"id='flagged-count'>(\d+)<", text).group(1))
    assert flagged > 0 and "images/" in text and "data:image/png;base64," in text
    before = dict(line.split() for line in (clothing_root / "noisy_label_kv.txt").read_text().splitlines())
    after = dict(line.split() for line in out.read_text().splitlines())
    classes = clothing1m.read_classes(clothing_root)
    issues = {r["file"]: r for r in csv.DictReader((tmp_path / "issues.csv").open())}
    assert set(after) == set(before)
    for key, label in after.items():
        r = issues.get(key)
        want = classes.index(r["suggested_label"]) if r and r["is_label_issue"] == "True" else int(before[key])
        assert int(label) == want, key
    summary = train(load_config(None, [*small, "optim.epochs=1", "loss.warmup_epochs=1", "train.name=cleaned",
                                       f"data.label_file={out}"]))
    assert summary["epochs"] == 1
    split = clothing1m.load("noisy_train", clothing_root)
    assert [int(after[k]) for k in split.files] == relabelled(split, out).labels.tolist()
    bad = tmp_path / "short_kv.txt"
    bad.write_text("\n".join(line for line in out.read_text().splitlines() if not line.startswith(split.files[0]))
                   + "\n")
    with pytest.raises(DatasetError, match="has no label"):
        relabelled(split, bad)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_in_a_real_browser(page, tmp_path):
    """Headless Chromium loads the page from disk: every thumbnail decodes (natural width > 0, set
    by the page's own script once loaded), the counts shown equal the CSV's, a screenshot renders."""
    url = page["html"].resolve().as_uri()
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*base, "--virtual-time-budget=10000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    loaded = re.search(r'<body data-images-loaded="(\d+)" data-images="(\d+)"', dom)
    assert loaded, dom[:500]
    shown = int(re.search(r"id=\"shown-count\">(\d+)<", dom).group(1))
    assert int(loaded.group(1)) == int(loaded.group(2)) == shown > 0
    flags = list(csv.DictReader(page["csv"].open()))
    assert int(re.search(r"id=\"flagged-count\">(\d+)<", dom).group(1)) == len(flags)
    shot = tmp_path / "shot.png"
    subprocess.run([*base, "--window-size=1280,1000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
