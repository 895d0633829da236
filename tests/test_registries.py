"""The one-place rule: a dataset, a loader backend and a model are each added by one new module
and one registration line; the config, the trainer and the tools take them from there."""
import json
import sys
import textwrap

import pytest

from lacol.config import ConfigError, load_config
from lacol.models import ENCODERS
from lacol.train import train
from pipelines.build import BACKENDS
from pipelines.sources import DATASETS

PLUGIN = '''
import numpy as np
import torch.nn as nn

from lacol.models import ENCODERS, SmallCNN
from pipelines.build import BACKENDS
from pipelines.sources import DATASETS, DatasetInfo, fashion_mnist

USED = {"backend": 0, "encoder": 0}


def load(split, root):
    """Fashion-MNIST's first 512 train / 256 test images under another name."""
    s = fashion_mnist.load(split, None)
    return s.subset(np.arange(512 if split == "train" else 256))


def counting_backend(d, split, views, shard):
    USED["backend"] += 1
    return BACKENDS["torch"](d, split, views, shard)


def tiny(num_classes, in_channels, width):
    USED["encoder"] += 1
    return SmallCNN(num_classes, in_channels, 4)


DATASETS["toy"] = DatasetInfo(("train", "test"), "train", ("test",), load, asymmetric={"asymmetric": {0: 1, 1: 0}})
BACKENDS["toy_backend"] = counting_backend
ENCODERS["toy_cnn"] = tiny
'''


@pytest.fixture
def plugin(tmp_path, fmnist_train):
    (tmp_path / "toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    sys.path.insert(0, str(tmp_path))
    try:
        import toy_plugin

        yield toy_plugin
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("toy_plugin", None)
        DATASETS.pop("toy", None)
        BACKENDS.pop("toy_backend", None)
        ENCODERS.pop("toy_cnn", None)


def test_a_dataset_a_backend_and_a_model_each_added_in_one_place(plugin, tmp_path):
    with pytest.raises(ConfigError, match="data.dataset='nope'.*'toy'"):
        load_config(None, ["data.dataset=nope"])
    cfg = load_config(None, ["data.dataset=toy", "data.backend=toy_backend", "model.arch=toy_cnn",
                             "data.noise=symmetric", "data.noise_rate=0.2", "data.batch_size=64",
                             "optim.epochs=2", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false",
                             f"train.out_dir={tmp_path}", "train.name=toy"])
    summary = train(cfg)
    assert summary["epochs"] == 2 and plugin.USED["backend"] >= 2 and plugin.USED["encoder"] == 1
    assert json.loads((tmp_path / "toy" / "history.json").read_text())[-1]["test_n"] == 256
    # its asymmetric noise map is its entry's: classes 0 and 1 swap, the rest keep their labels
    from pipelines.build import train_split

    asym = load_config(None, ["data.dataset=toy", "data.noise=asymmetric", "data.noise_rate=0.4"]).data
    split, clean = train_split(asym), plugin.load("train", None).labels
    moved = split.labels != clean
    assert set(clean[moved]) == {0, 1} and (split.labels[moved] == 1 - clean[moved]).all()
    assert moved.sum() == round(0.4 * (clean == 0).sum()) + round(0.4 * (clean == 1).sum())
