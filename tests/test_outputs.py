"""One output rule for every file the project writes (pipelines.fileio.output_target): a regular
file or a new path is replaced atomically, a symlink is written through to its target, anything
else that exists is refused in one line before any work. Private nodes only, never /dev."""
import os
import socket
import stat

import pytest

from lacol.cli import main as lacol
from pipelines.fileio import OutputError, atomic_write
from tools.noise import main as lacol_noise


@pytest.fixture()
def nodes(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    sock = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    out = {"a FIFO": fifo, "a folder": folder, "a socket": sock}
    if os.geteuid() == 0:  # a private character device (the null device's numbers), as root only
        dev = tmp_path / "null"
        os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        out["a device"] = dev
    yield out
    s.close()


def test_nothing_but_a_regular_file_is_replaced(nodes):
    for kind, path in nodes.items():
        before = os.stat(path).st_mode
        with pytest.raises(OutputError, match=f"{path} is {kind}: refused"):
            atomic_write(path, "x")
        assert os.stat(path).st_mode == before  # still the node it was
        assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.tmp")]


def test_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "data" / "real.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic_write(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "later.csv"
    dangling.symlink_to(tmp_path / "data" / "new.csv")
    atomic_write(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "data" / "new.csv").read_text() == "made"
    fifo_link = tmp_path / "fifo_link"
    os.mkfifo(tmp_path / "pipe")
    fifo_link.symlink_to(tmp_path / "pipe")
    with pytest.raises(OutputError, match="symlink's target"):
        atomic_write(fifo_link, "x")


def test_the_commands_refuse_before_any_work(nodes, capsys):
    for path in nodes.values():
        assert lacol(["plot", "no_such_run", "--out", str(path)]) == 2  # refused before the runs are read
        err = capsys.readouterr().err
        assert str(path) in err and "refused" in err and err.count("\n") == 1
        assert lacol(["audit", "--run", "no_such_run", "--html", str(path)]) == 2
        assert "refused" in capsys.readouterr().err
        assert lacol_noise(["--dataset", "fashion_mnist", "--kind", "symmetric", "--out", str(path)]) == 2
        assert "refused" in capsys.readouterr().err


def test_lacol_convert_never_overwrites_a_dataset_unasked(tmp_path, capsys):
    """A non-empty --out (a real dataset folder, say) is refused unless --force; so are existing
    outputs of the splits asked for; sizes Fashion-MNIST cannot give are one line."""
    from tools.convert import main as convert

    root = tmp_path / "c1m"
    root.mkdir()
    (root / "noisy_label_kv.txt").write_text("images/a.jpg 1\n" * 24)
    assert convert(["fmnist-clothing1m", "--out", str(root), "--num-train", "8"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (root / "noisy_label_kv.txt").read_text().count("\n") == 24  # untouched
    for n in ("-5", "0", "100000"):
        assert convert(["fmnist-clothing1m", "--out", str(tmp_path / "new"), "--num-train", n]) == 2
        err = capsys.readouterr().err
        assert "--num-train" in err and err.count("\n") == 1
    ffcv = tmp_path / "ffcv"
    ffcv.mkdir()
    (ffcv / "fashion_mnist_test.beton").write_text("kept")
    assert convert(["fashion_mnist", "--to", "ffcv", "--out", str(ffcv), "--splits", "test", "--no-progress"]) == 2
    assert "exist already: pass --force" in capsys.readouterr().err
    assert (ffcv / "fashion_mnist_test.beton").read_text() == "kept"
