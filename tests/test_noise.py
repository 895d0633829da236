import numpy as np
import pytest
import torch

from pipelines import noise
from pipelines.sources import cifar
from tests.conftest import write_cifar

N = 60_000


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_realised_rate_and_never_true_class(rate):
    clean = np.random.default_rng(1).integers(0, 10, N)
    noisy = noise.symmetric(clean, rate, 10, seed=3)
    flipped = noisy != clean
    assert abs(flipped.mean() - rate) < 0.01
    # Off-diagonal mass spread evenly over the other classes.
    t = noise.transition_matrix(clean, noisy, 10)
    off = t[~np.eye(10, dtype=bool)]
    assert np.allclose(off, rate / 9, atol=0.01)
    assert (noise.symmetric(clean, rate, 10, seed=3) == noisy).all()


def test_asymmetric_maps_exact():
    clean = np.repeat(np.arange(10), 6000)
    from pipelines.sources import DATASETS

    for dataset in ("cifar10", "fashion_mnist"):
        mapping = DATASETS[dataset].asymmetric["asymmetric"]
        target = noise.asymmetric_map(dataset, 10)
        noisy = noise.asymmetric(clean, 0.4, target, seed=0)
        for c in range(10):
            moved = noisy[clean == c] != c
            if c in mapping:
                assert moved.sum() == 2400 and (noisy[clean == c][moved] == mapping[c]).all()
            else:
                assert not moved.any()
    assert noise.asymmetric_map("cifar10", 10)[9] == 1  # truck -> automobile
    assert noise.asymmetric_map("fashion_mnist", 10)[5] == 7  # sandal -> sneaker
    assert DATASETS["fashion_mnist"].asymmetric == {"asymmetric": {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9},
                                                    "asymmetric_cdr": {0: 6, 2: 4, 5: 7, 7: 5}}
    assert DATASETS["cifar10"].asymmetric == {"asymmetric": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}}


def test_asymmetric_cifar100_within_true_superclass(tmp_path):
    write_cifar(tmp_path, "cifar100", n_train=300)
    split = cifar.load("cifar100", "train", tmp_path)
    f2c = split.extra["fine_to_coarse"]
    target = noise.asymmetric_map("cifar100", 100, f2c)
    assert (f2c[target] == f2c).all() and (target != np.arange(100)).all()
    for sc in range(20):  # one cycle through each superclass, in fine-index order
        members = np.flatnonzero(f2c == sc)
        assert target[members].tolist() == np.roll(members, -1).tolist()
    n = noise.make_noise(split, "cifar100", "asymmetric", 0.5, seed=1)
    flipped = n.labels != n.clean
    assert (n.labels[flipped] == target[n.clean[flipped]]).all()


def test_instance_noise_ptd(fmnist_train):
    a = noise.make_noise(fmnist_train, "fashion_mnist", "instance", 0.4, seed=5)
    b = noise.make_noise(fmnist_train, "fashion_mnist", "instance", 0.4, seed=5)
    c = noise.make_noise(fmnist_train, "fashion_mnist", "instance", 0.4, seed=6)
    assert (a.labels == b.labels).all() and (a.labels != c.labels).any()
    assert abs(a.realised_rate - 0.4) < 0.01
    # Instance-dependent: flips concentrate on a few target classes per class, unlike symmetric.
    t = noise.transition_matrix(a.clean, a.labels, 10)
    assert (np.sort(t * (1 - np.eye(10)), 1)[:, -1] > 0.1).all()


def test_save_load_roundtrip(tmp_path, fmnist_train):
    n = noise.make_noise(fmnist_train, "fashion_mnist", "symmetric", 0.4, seed=2)
    path = n.save(tmp_path / "n.npz")
    m = noise.NoisyLabels.load(path)
    assert (m.labels == n.labels).all() and m.kind == "symmetric" and m.rate == 0.4 and m.seed == 2
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(noise.DatasetError, match="lacol-noise"):
        noise.NoisyLabels.load(tmp_path / "none.npz")


def test_cifar_n_files(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=50)
    split = cifar.load("cifar10", "train", tmp_path)
    worse = (split.labels + 1) % 10
    torch.save({"clean_label": split.labels, "worse_label": worse, "aggre_label": split.labels}, tmp_path / "CIFAR-10_human.pt")
    n = noise.make_noise(split, "cifar10", "cifar-n:worse_label", 0, cifar_n_file=tmp_path / "CIFAR-10_human.pt")
    assert (n.labels == worse).all() and n.realised_rate == 1.0
    with pytest.raises(noise.DatasetError, match="random_label1"):
        noise.make_noise(split, "cifar10", "cifar-n:random_label1", 0, cifar_n_file=tmp_path / "CIFAR-10_human.pt")
    with pytest.raises(noise.DatasetError, match="cifar-n keys"):
        noise.make_noise(split, "cifar10", "cifar-n:nope", 0, cifar_n_file=tmp_path / "CIFAR-10_human.pt")


def test_cli_prints_rate_and_matrix(tmp_path, capsys):
    from tools.noise import main
    assert main(["--dataset", "fashion_mnist", "--kind", "symmetric", "--rate", "0.3", "--out", str(tmp_path / "n.npz")]) == 0
    out = capsys.readouterr().out
    assert "realised 0.3000" in out and "T-shirt" in out and (tmp_path / "n.npz").is_file()
    assert main(["--dataset", "fashion_mnist", "--kind", "bogus", "--out", str(tmp_path / "x.npz")]) == 2
