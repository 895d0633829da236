"""Files a user hands us that try to run code: each payload would create a marker file if it ran."""
import pickle

import numpy as np
import pytest
import torch

from pipelines import noise
from pipelines.sources import DatasetError, cifar
from pipelines.safe_pickle import UnsafePickle, load_file


class Payload:
    """Unpickling this calls os.system("touch MARKER")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_the_payload_runs_under_plain_pickle(tmp_path):
    """The control: plain pickle.loads runs it, so the tests below mean something."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_safe_unpickler_refuses_code_and_reads_arrays(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": Payload(marker)}))
    with pytest.raises(UnsafePickle, match="posix.system|os.system|nt.system"):
        load_file(path)
    assert not marker.exists()
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2], "f": np.float32(2.5)}
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_file(path, encoding="bytes")
        assert np.array_equal(back[b"data"], data[b"data"]) and back["labels"] == [1, 2]


def test_a_cifar_batch_with_a_payload_is_refused(tmp_path):
    from conftest import write_cifar

    root = write_cifar(tmp_path / "c", "cifar10")
    assert len(cifar.load("cifar10", "train", root)) == 60  # the release format still reads
    marker = tmp_path / "ran"
    batch = next(root.rglob("data_batch_1"))
    batch.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}))
    with pytest.raises(DatasetError, match="not a CIFAR python-release file"):
        cifar.load("cifar10", "train", root)
    assert not marker.exists()


def test_a_cifar_n_file_with_a_payload_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": Payload(marker)}, path)  # a torch.save zip, as the release
    with pytest.raises(DatasetError, match="not a CIFAR-N label file"):
        noise.load_cifar_n(path, "worse_label", 10)
    path.write_bytes(pickle.dumps({"worse_label": Payload(marker)}))  # a plain pickle
    with pytest.raises(DatasetError, match="not a CIFAR-N label file"):
        noise.load_cifar_n(path, "worse_label", 10)
    assert not marker.exists()


def test_resuming_a_run_folder_runs_no_code_from_it(tmp_path):
    """Checkpoints hold safetensors and JSON only; pickles planted in one (accelerate's file names)
    are never opened, and a checkpoint of the older pickled format is refused by name."""
    from test_train import RECIPE, SMALL

    from lacol.config import load_config
    from lacol.train import train

    common = [*SMALL, "optim.epochs=2", f"train.out_dir={tmp_path}", "train.name=r"]
    train(load_config(RECIPE, [*common, "train.stop_after=1"]))
    (ckpt,) = (tmp_path / "r" / "checkpoints").glob("step_*")
    assert {p.suffix for p in ckpt.iterdir()} == {".safetensors", ".json"}
    marker = tmp_path / "ran"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"):
        (ckpt / name).write_bytes(pickle.dumps(Payload(marker)))
    assert train(load_config(RECIPE, common), resume=True)["epochs"] == 2
    assert not marker.exists()
    (ckpt,) = sorted((tmp_path / "r" / "checkpoints").glob("step_*"))[-1:]
    (ckpt / "state.json").unlink()
    with pytest.raises(FileNotFoundError, match="older checkpoint format"):
        train(load_config(RECIPE, [*common, "optim.epochs=3"]), resume=True)
    assert not marker.exists()
