"""The layout's rules, checked on the source: tools/ on top, lacol/ in the middle, pipelines/ at the
ground; nothing imports upward and no module imports itself back through others."""
import ast
from pathlib import Path

import pytest
import torch

from pipelines.batch import EvalLoader, TrainLoader
from pipelines.build import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"pipelines": 0, "lacol": 1, "tools": 2}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (function-level imports included)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in LAYER}
    return found


GRAPH = {_module(p): _imports(p) for top in LAYER for p in (ROOT / top).rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The project module an imported name refers to (a module, or a name inside one)."""
    while name and name not in GRAPH:
        name = name.rpartition(".")[0]
    return name or None


def test_no_module_imports_upward():
    upward = [(m, i) for m, imps in GRAPH.items() for i in imps
              if LAYER[i.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not upward, upward


def test_no_import_cycle():
    edges = {m: {r for i in imps if (r := _resolve(i)) and r != m and not m.startswith(r + ".")
                 and not r.startswith(m + ".")} for m, imps in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in edges.get(m, ()):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]) if n in path else n)
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_the_trainer_names_no_backend_or_format():
    src = (ROOT / "lacol" / "train.py").read_text().lower()
    for word in ("ffcv", "dali", "beton", "torch_loader", "torchloader"):
        assert word not in src, word


def test_every_backend_is_in_the_table():
    assert {"torch", "ffcv", "dali"} <= set(BACKENDS)


def test_the_torch_backend_keeps_the_loader_protocol(fmnist_train):
    from pipelines.data_config import DataConfig
    from pipelines.build import make_loader

    d = DataConfig(batch_size=32)
    split = fmnist_train.subset(range(96))
    loader = make_loader(d, split, d.views())
    assert isinstance(loader, TrainLoader) and len(loader) == 3
    assert isinstance(make_loader(d, split, None), EvalLoader)
    full = next(iter(loader))
    loader.set_epoch(0, num_views=1)  # warm-up: the weak view alone, the same one
    weak = next(iter(loader))
    assert weak.strong is None and weak.strong2 is None and full.strong is not None
    assert torch.equal(weak.weak, full.weak) and torch.equal(weak.index, full.index)

