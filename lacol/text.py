"""Message helpers shared by the config and the readers of run folders and weights."""
from __future__ import annotations


def first_line(e: Exception) -> str:
    """An exception's first message line (a loader's multi-line error in a one-line message)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
