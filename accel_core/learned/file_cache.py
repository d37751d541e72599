"""Profiles read again only when their file changes: one cache rule for every profile kind (L2P / LESA,
HyCa), keyed by the resolved path and stamped by (mtime, size)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def load_by_stamp(cache: dict[str, tuple[tuple[int, int], T]], full: Path, load: Callable[[Path], T]) -> T:
    """`load(full)`, or the cached result while the file's (mtime, size) stamp is unchanged."""
    st = full.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = cache.get(str(full))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = load(full)
    cache[str(full)] = (stamp, value)
    return value
