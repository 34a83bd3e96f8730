"""`ops keys create / list / revoke`: a key printed once, listed by id only, revoked for the authorizer."""

import re

import pytest

from functions.auth import authorizer
from functions.shared.tables import ApiKeysTable
from tests.ops.support import cli as ops

KEY = re.compile(r"mk_(test|live)_[A-Za-z0-9_-]{43}")


@pytest.fixture
def keys(system):
    authorizer._cache.clear()
    yield ApiKeysTable.from_settings()
    authorizer._cache.clear()


def created_key(output: str) -> str:
    (key,) = [m.group(0) for m in KEY.finditer(output)]
    return key


def test_create_prints_the_key_once_with_every_storefront_scope_by_default_and_list_never_shows_it(keys):
    made = ops("keys", "create", "shop_1")
    assert made.exit_code == 0, made.output
    key = created_key(made.output)
    assert authorizer.identify(f"Bearer {key}")["scopes"].split() == sorted(
        ["payments:write", "payments:read", "refunds", "releases", "sellers", "webhooks"])
    listed = ops("keys", "list")
    assert listed.exit_code == 0, listed.output
    assert key[:14] in listed.output and key not in listed.output and "shop_1" in listed.output


def test_create_with_scopes_and_live(keys):
    made = ops("keys", "create", "shop_2", "--scopes", "payments:read", "--scopes", "refunds", "--live")
    key = created_key(made.output)
    assert key.startswith("mk_live_")
    assert authorizer.identify(f"Bearer {key}")["scopes"] == "payments:read refunds"


def test_create_refuses_an_unknown_scope(keys):
    refused = ops("keys", "create", "shop_1", "--scopes", "admin")
    assert refused.exit_code == 1 and "scopes must be some of" in refused.output
    assert list(keys.all()) == []


def test_revoke_stops_the_key(keys):
    key = created_key(ops("keys", "create", "shop_1").output)
    revoked = ops("keys", "revoke", key[:14])
    assert revoked.exit_code == 0, revoked.output
    assert authorizer.identify(f"Bearer {key}") == {"error": "revoked_api_key", "key_id": key[:14]}
    assert "revoked" in ops("keys", "list").output.lower()
    assert ops("keys", "revoke", "mk_test_nosuch").exit_code == 1
