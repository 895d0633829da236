import numpy as np
import pytest

from pipelines.sources import DatasetError, cifar, clothing1m, fashion_mnist, load_split
from tests.conftest import write_cifar


def test_fashion_mnist_real_files(fmnist_train):
    test = fashion_mnist.load("test")
    assert fmnist_train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert fmnist_train.images.dtype == np.uint8
    assert np.bincount(fmnist_train.labels).tolist() == [6000] * 10  # the real, balanced release
    assert (fmnist_train.clean_labels == fmnist_train.labels).all()
    assert fmnist_train.classes[0] == "T-shirt/top" and fmnist_train.channels == 1


def test_fashion_mnist_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path}.*apt-get install dataset-fashion-mnist"):
        fashion_mnist.load("train", tmp_path)


def test_fashion_mnist_truncated_file(tmp_path):
    import gzip, shutil
    for f in fashion_mnist.DEBIAN_ROOT.iterdir():
        shutil.copy(f, tmp_path / f.name)
    raw = gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as g:
        g.write(raw[:-10])
    with pytest.raises(DatasetError, match="t10k-labels.*truncated"):
        fashion_mnist.load("test", tmp_path)


def test_cifar10_release_format(tmp_path):
    folder = write_cifar(tmp_path, "cifar10")
    s = load_split("cifar10", "train", tmp_path)
    assert s.images.shape == (60, 32, 32, 3) and s.num_classes == 10
    # Channel order: the release stores R plane, G plane, B plane per row.
    import pickle
    raw = pickle.loads((folder / "data_batch_1").read_bytes())[b"data"][0]
    assert (s.images[0, :, :, 1] == raw[1024:2048].reshape(32, 32)).all()
    assert load_split("cifar10", "test", folder).images.shape == (20, 32, 32, 3)


def test_cifar100_fine_and_coarse(tmp_path):
    folder = write_cifar(tmp_path, "cifar100", n_train=150)
    s = cifar.load("cifar100", "train", tmp_path)
    f2c = s.extra["fine_to_coarse"]
    assert s.num_classes == 100 and f2c.shape == (100,)
    assert (f2c[s.labels] == s.extra["coarse_labels"]).all()
    assert np.bincount(f2c).tolist() == [5] * 20


def test_cifar_missing_names_file(tmp_path):
    with pytest.raises(DatasetError, match="data_batch_1.*python release"):
        load_split("cifar10", "train", tmp_path)


def test_clothing1m_splits(clothing_root):
    noisy = clothing1m.load("noisy_train", clothing_root)
    assert len(noisy) == 160 and noisy.num_classes == 10
    known = noisy.clean_labels >= 0
    assert known.sum() == 40  # clean_fraction 0.25 of train has a clean label attached
    assert 0.2 < (noisy.labels[known] != noisy.clean_labels[known]).mean() < 0.6
    for split, n in (("clean_train", 40), ("clean_val", 32), ("clean_test", 32)):
        s = clothing1m.load(split, clothing_root)
        assert len(s) == n and (s.labels == s.clean_labels).all()
    assert noisy.path(0).is_file()


def test_clothing1m_malformed_line_names_file_and_line(clothing_root, tmp_path):
    import shutil
    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root, ignore=shutil.ignore_patterns("images"))
    lines = (root / "noisy_label_kv.txt").read_text().splitlines()
    lines[6] = lines[6].split()[0] + " eleven"
    (root / "noisy_label_kv.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"noisy_label_kv.txt:7: .*expected '<relative image path> <label 0..9>'"):
        clothing1m.load("noisy_train", root)
    lines[6] = lines[6].split()[0] + " 10"  # out of range
    (root / "noisy_label_kv.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"noisy_label_kv.txt:7:"):
        clothing1m.load("noisy_train", root)


def test_clothing1m_key_without_label(clothing_root, tmp_path):
    import shutil
    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root, ignore=shutil.ignore_patterns("images"))
    with open(root / "clean_val_key_list.txt", "a") as f:
        f.write("images/9/99/missing.jpg\n")
    with pytest.raises(DatasetError, match=r"clean_val_key_list.txt:33: key 'images/9/99/missing.jpg' has no label"):
        clothing1m.load("clean_val", root)


def test_clothing1m_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="category_names_eng.txt.*data.root"):
        clothing1m.load("noisy_train", tmp_path)


def test_16_bit_gray_png_is_scaled_not_clipped(tmp_path):
    """PIL's own convert clips 16-bit values above 255 to white; the decode scales them."""
    from PIL import Image

    from pipelines.decode import decode_square

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I;16")
    px = decode_square(tmp_path / "g16.png", 64, mode="L").astype(float)
    assert abs(px.mean() - ramp.mean() / 257) < 2 and px.min() < 5 and px.max() > 250
    rgb = decode_square(tmp_path / "g16.png", 64)
    assert rgb.shape == (64, 64, 3) and abs(rgb.mean() - 127.5) < 2
