"""The charge's names: its key, its PSP idempotency key, its execution name (valid, deterministic, unique)."""

import re

from functions.shared.charges import execution_name, group_orders
from functions.shared.names import charge_idempotency_key, charge_key

VALID_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")


def test_a_charge_is_a_checkout_in_one_currency():
    assert charge_key("chk_1", "usd") == "chk_1#USD"


def test_the_psp_key_gets_a_generation_only_after_one_was_retired():
    assert charge_idempotency_key("chk_1", "USD") == "charge:chk_1:USD"
    assert charge_idempotency_key("chk_1", "eur", 2) == "charge:chk_1:EUR:g2"


def test_execution_names_are_valid_deterministic_and_per_attempt():
    assert execution_name("chk_1#USD", 1) == "chk_1-USD-1"
    assert execution_name("chk_1#USD", 2) != execution_name("chk_1#USD", 1)
    longest = "c" * 64
    names = {execution_name(f"{longest}#{currency}", 12) for currency in ("USD", "EUR")}
    assert len(names) == 2 and all(VALID_NAME.match(name) for name in names)
    assert execution_name(f"{longest}#USD", 12) == execution_name(f"{longest}#USD", 12)
    assert execution_name(f"{longest}#USD", 12).endswith("-12")


def test_orders_group_by_currency_in_request_order():
    orders = [{"payment_order_id": "a", "currency": "USD"}, {"payment_order_id": "b", "currency": "EUR"},
              {"payment_order_id": "c", "currency": "USD"}]
    assert {k: [o["payment_order_id"] for o in v] for k, v in group_orders(orders).items()} == {
        "USD": ["a", "c"], "EUR": ["b"]}


def test_a_tenant_key_never_shares_its_execution_name_with_a_default_clients_checkout():
    # `~` and `#` both become `-`: without the digest, shop_b's chk_1 and the default client's shop_b-chk_1
    # would start (and, deduplicated by name, skip) each other's workflow
    tenant, default = execution_name("shop_b~chk_1#USD", 1), execution_name("shop_b-chk_1#USD", 1)
    assert tenant != default and VALID_NAME.match(tenant) and len(tenant) <= 80
    assert execution_name(f"{'s' * 40}~{'c' * 64}#USD", 3).endswith("-3")
