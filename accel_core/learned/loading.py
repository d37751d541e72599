"""Load a learned profile whatever its method: the header's method picks the loader (L2P or LESA).

Above both `profile.py` (the shared format and the L2P loader) and `lesa.py` (which builds on
profile.py), so neither imports the other back.
"""
from __future__ import annotations

import os

from .file_cache import load_by_stamp
from .lesa import load_lesa
from .profile import L2PProfile, load_l2p, profile_method, resolve_profile_path


def load_learned(path: str | os.PathLike, root: str | os.PathLike | None = None, family: str | None = None,
                 fingerprint: str | None = None) -> L2PProfile:
    """load_l2p, or for a profile whose method is "lesa" `lesa.load_lesa` (an L2PProfile with experts)."""
    if profile_method(resolve_profile_path(path, root)) == "lesa":
        return load_lesa(path, root, family, fingerprint)
    return load_l2p(path, root, family, fingerprint)


_CACHE: dict[str, tuple[tuple[int, int], L2PProfile]] = {}


def load_l2p_cached(path: str | os.PathLike, root: str | os.PathLike | None = None) -> L2PProfile:
    """load_learned (L2P or LESA; no family / fingerprint check), read again only when the file changes."""
    full = resolve_profile_path(path, root)
    return load_by_stamp(_CACHE, full, lambda f: load_learned(f, f.parent))
