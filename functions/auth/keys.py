"""API keys (issue 21): `mk_test_` or `mk_live_` and 32 random bytes (base64url). Only the key's SHA-256 is
stored; its first characters (`key_id`) name it in lists and logs without revealing it."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from functions.auth import tenancy
from functions.shared import clock
from functions.shared.names import API_KEY_PREFIXES, DEFAULT_SCOPES, SCOPES
from functions.shared.tables import ApiKeysTable

_KEY = re.compile(r"mk_(test|live)_[A-Za-z0-9_-]{43}")
_KEY_ID_SECRET_CHARS = 6  # of the 43 random characters: enough to tell keys apart, too few to guess the rest


def new_key(mode: str = "test") -> str:
    return API_KEY_PREFIXES[mode] + secrets.token_urlsafe(32)


def is_well_formed(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str:
    prefix = next(p for p in API_KEY_PREFIXES.values() if key.startswith(p))
    return key[: len(prefix) + _KEY_ID_SECRET_CHARS]


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (scheme case-insensitive), else None."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def issue(table: ApiKeysTable, client_id: str, scopes: Sequence[str] = DEFAULT_SCOPES, mode: str = "test",
          rate_limit_per_s: int | None = None) -> str:
    """A new key for `client_id`, stored as its hash; the key itself is returned once and kept nowhere. Without
    `rate_limit_per_s` the client gets the default limit (settings.default_rate_limit_per_s)."""
    tenancy.check_client_id(client_id)  # it prefixes the client's ids: `~` and the like must not be in it
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(sorted(unknown)) or 'none'}")
    if rate_limit_per_s is not None and rate_limit_per_s < 1:
        raise ValueError("the rate limit is at least 1 request per second")
    key = new_key(mode)
    table.create(key_hash(key), key_id(key), client_id, scopes, clock.iso(), rate_limit_per_s)
    return key
