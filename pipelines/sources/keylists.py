"""Clothing1M's list files read as byte arrays: a 1M-line key list or ``<key> <label>`` file in a
fraction of a second, with no Python object per line.

Only the common spelling takes this path: UTF-8 text, ``\\n`` line ends (a leading byte-order mark
is dropped), one key per line without spaces, keys already in the form ``normal_key`` keeps,
``<key> <label>`` lines with one space and a decimal label below the class count, no key listed
twice. Anything else returns None and the caller's line-by-line reader decides (it names the
file and line of a problem); so the result is always the one the slow path gives.

Keys are joined by a 64-bit hash of their bytes (a polynomial over the bytes, computed column by
column across all keys), then every match is verified byte for byte: a hash collision can cost
the fast path, never a wrong label.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Keys

NL, SPACE = 10, 32
_P = np.uint64(0x100000001B3)  # FNV's prime: any odd 64-bit multiplier mixes the bytes


def _text(path: Path) -> np.ndarray | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\r" in data or b"\t" in data or b"\\" in data or b"//" in data or b"/." in data or b"\0" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return np.frombuffer(data, dtype=np.uint8)


def _lines(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every non-empty line."""
    nl = np.flatnonzero(buf == NL)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(buf)]])
    keep = ends > starts
    return starts[keep], ends[keep]


def _plain_keys(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> bool:
    """No key needs ``normal_key``: none starts with '/' or '.', none has a drive letter."""
    if not len(starts):
        return True
    first = buf[starts]
    second = buf[np.minimum(starts + 1, len(buf) - 1)]
    return not ((first == ord("/")) | (first == ord(".")) | ((ends - starts > 1) & (second == ord(":")))).any()


@dataclass
class HashedKeys:
    """Keys as (start, length) into a buffer, with their hashes."""

    buf: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    hashes: np.ndarray
    order: np.ndarray | None = None
    """argsort of ``hashes``, once computed."""

    def sorted_order(self) -> np.ndarray:
        if self.order is None:
            self.order = np.argsort(self.hashes)
        return self.order

    @classmethod
    def of(cls, buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> "HashedKeys":
        h = lengths.astype(np.uint64)
        ends = starts + lengths
        at = starts.copy()
        byte = np.empty(len(starts), dtype=np.uint8)
        with np.errstate(over="ignore"):
            for _ in range(int(lengths.max()) if len(lengths) else 0):
                np.minimum(at, ends - 1, out=at)  # a finished key repeats its last byte: still one hash per key
                np.take(buf, at, out=byte, mode="clip")
                h *= _P
                h += byte
                at += 1
        return cls(buf, starts, lengths, h)

    def same(self, i: np.ndarray, other: "HashedKeys", k: np.ndarray) -> np.ndarray:
        """Whether key ``i`` here and key ``k`` of ``other`` are the same bytes, per pair."""
        eq = self.lengths[i] == other.lengths[k]
        a, b = self.starts[i], other.starts[k]
        n = self.lengths[i]
        for j in range(int(n.max()) if len(n) else 0):
            live = j < n
            eq &= ~live | (self.buf[np.minimum(a + j, len(self.buf) - 1)] ==
                           other.buf[np.minimum(b + j, len(other.buf) - 1)])
        return eq


@dataclass
class LabelFile:
    """A ``<key> <label>`` file: its keys (hashed, sorted by hash) and labels."""

    keys: HashedKeys
    order: np.ndarray
    labels: np.ndarray

    def lookup(self, query: HashedKeys) -> tuple[np.ndarray, np.ndarray]:
        """(label, found) for each query key."""
        sorted_h = self.keys.hashes[self.order]
        if not len(sorted_h):
            return np.full(len(query.hashes), -1, dtype=np.int64), np.zeros(len(query.hashes), dtype=bool)
        q = query.sorted_order()  # sorted needles: searchsorted walks the haystack in order
        pos = np.empty(len(q), dtype=np.int64)
        pos[q] = np.searchsorted(sorted_h, query.hashes[q])
        pos = np.minimum(pos, len(sorted_h) - 1)
        k = self.order[pos]
        found = sorted_h[pos] == query.hashes
        rows = np.flatnonzero(found)
        found[rows] = query.same(rows, self.keys, k[rows])
        return np.where(found, self.labels[k], -1), found


def read_keys(path: Path) -> tuple[Keys, HashedKeys] | None:
    """A key list (one key per line) on the fast path, or None."""
    buf = _text(path)
    if buf is None or (buf == SPACE).any():
        return None
    starts, ends = _lines(buf)
    if not _plain_keys(buf, starts, ends):
        return None
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keys = Keys(buf[buf != NL], offsets)
    hashed = HashedKeys.of(keys.buf, offsets[:-1], lengths)
    h = hashed.hashes[hashed.sorted_order()]
    if len(h) > 1 and (h[1:] == h[:-1]).any():
        return None  # a key listed twice (or a collision): the slow path names the line
    return keys, hashed


def read_labels(path: Path, num_classes: int) -> LabelFile | None:
    """A ``<key> <label>`` file on the fast path, or None."""
    buf = _text(path)
    if buf is None:
        return None
    starts, ends = _lines(buf)
    spaces = np.flatnonzero(buf == SPACE)
    if len(spaces) != len(starts) or not _plain_keys(buf, starts, ends):
        return None
    if len(spaces) and not ((spaces > starts) & (spaces < ends - 1)).all():  # one space per line, inside it
        return None
    digits = ends - spaces - 1
    if len(digits) and digits.max() > 6:
        return None
    labels = np.zeros(len(starts), dtype=np.int64)
    for j in range(int(digits.max()) if len(digits) else 0):
        live = j < digits
        d = buf[np.minimum(spaces + 1 + j, len(buf) - 1)].astype(np.int64) - ord("0")
        if ((d < 0) | (d > 9))[live].any():
            return None
        labels = np.where(live, labels * 10 + d, labels)
    if len(labels) and labels.max() >= num_classes:
        return None
    keys = HashedKeys.of(buf, starts, spaces - starts)
    order = keys.sorted_order()
    h = keys.hashes[order]
    if len(order) > 1 and (h[1:] == h[:-1]).any():
        return None  # a key labelled twice: the slow path decides whether the labels agree
    return LabelFile(keys, order, labels)
