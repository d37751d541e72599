"""The token-method registry; `TokenSettings` validates `method` against `TOKEN_POLICIES.names()`."""
from __future__ import annotations

from ...registry import Registry

TOKEN_POLICIES: Registry = Registry("token method")
