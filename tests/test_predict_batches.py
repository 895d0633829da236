"""`lacol predict` runs data.eval_batch_size images at a time (issue 25, item 7): memory flat in
the number of images, the same answers as one batch."""
import numpy as np
from PIL import Image

from lacol import infer
from lacol.cli import main as lacol


def test_predict_in_batches(tmp_path, monkeypatch):
    assert lacol(["train", "data.train_subset=256", "data.batch_size=64", "data.val_size=0", "optim.epochs=1",
                  "loss.warmup_epochs=1", "data.noise=none", "train.threads=1", "train.progress=false",
                  f"train.out_dir={tmp_path}", "train.name=r"]) == 0
    rng = np.random.default_rng(0)
    paths = []
    for i in range(23):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
        paths.append(str(p))
    load = infer.load_run
    seen = []

    def recording(*a, **k):
        cfg, model, info = load(*a, **k)
        forward = model.forward
        model.forward = lambda x, **kw: (seen.append(x.shape[0]), forward(x, **kw))[1]
        return cfg, model, info

    whole = infer.predict(tmp_path / "r", paths)
    monkeypatch.setattr(infer, "load_run", lambda *a, **k: _small(recording(*a, **k)))
    batched = infer.predict(tmp_path / "r", paths)
    assert seen == [10, 10, 3]
    assert [p for p, _ in batched] == paths
    for (_, a), (_, b) in zip(whole, batched):
        assert [c for c, _ in a] == [c for c, _ in b] and np.allclose([v for _, v in a], [v for _, v in b], atol=1e-5)


def _small(loaded):
    cfg, model, info = loaded
    cfg.data.eval_batch_size = 10
    return cfg, model, info
