"""Pickle files a user hands us (the CIFAR python release, CIFAR-N label files), read without
running code: an unpickler that builds only numpy arrays, numpy scalars and dtypes, and plain
containers, strings and numbers. Any other global (a function call such as os.system, a class)
is refused with ``UnsafePickle``, before it is looked up."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 spells bytes: encode(text, "latin1")
    ("collections", "OrderedDict"),
}


class UnsafePickle(pickle.UnpicklingError):
    """The file asks for something besides arrays and plain data."""


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickle(f"it asks for {module}.{name}, which a data file has no need of; refused")

    def persistent_load(self, pid):
        raise UnsafePickle("it holds torch tensor storage; expected numpy arrays")


def loads(data: bytes, encoding: str = "ASCII"):
    return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


def load_file(path: str | Path, encoding: str = "ASCII"):
    """A plain pickle, or the ``data.pkl`` inside a ``torch.save`` zip archive, read safely."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise UnsafePickle("a zip archive without data.pkl")
            return loads(z.read(names[0]), encoding)
    return loads(path.read_bytes(), encoding)
