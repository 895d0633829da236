"""The methods, one class per file, by ``loss.method`` name (``METHODS``). Adding one: a file
with a ``@register``-ed subclass of ``Method`` (or ``SelectingMethod``) and its import line here."""
from __future__ import annotations

from . import ce, ce_strong, lacol, lacol_semi, selection  # noqa: F401  (each registers its class)
from .base import Method, SelectingMethod
from .registry import METHODS, method_class

__all__ = ["METHODS", "Method", "SelectingMethod", "build_method", "method_class"]


def build_method(cfg, num_classes: int, dist=None, **kw) -> Method:
    """The method ``cfg.method`` names (``cfg``: a ``LossConfig``), ready for the trainer."""
    return method_class(cfg.method)(cfg, num_classes, dist, **kw)
