"""``selection``: LaCoL without its metric-space terms (L_LS on the selected samples only)."""
from __future__ import annotations

from .base import SelectingMethod
from .registry import register


@register
class Selection(SelectingMethod):
    name = "selection"
    colour = "tab:orange"
    terms = ("ls", "pl")
