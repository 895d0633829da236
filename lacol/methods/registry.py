"""The method registry: ``loss.method`` name -> class. Imports nothing of the project, so the
config can validate names and apply a method's defaults without importing the methods."""
from __future__ import annotations

TERM_NAMES = {"ce": "CE", "penalty": "penalty", "ls": "L_LS", "pl": "L_PL", "ms": "L_MS", "sc": "L_SC"}
"""Display names of the loss terms methods report (``Method.terms``, and ``ce``/``penalty`` in warm-up)."""

METHODS: dict[str, type] = {}
"""Filled by ``register`` as ``lacol.methods`` imports each method's module (``lacol`` imports
``lacol.methods``, so every reader of the config sees every method)."""


def register(cls: type) -> type:
    """Class decorator: the method under ``cls.name``."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"loss.method={cls.name!r} is registered twice ({METHODS[cls.name].__module__} and "
                         f"{cls.__module__})")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type:
    if name not in METHODS:
        raise KeyError(f"loss.method={name!r}: registered methods are {', '.join(METHODS)}")
    return METHODS[name]
