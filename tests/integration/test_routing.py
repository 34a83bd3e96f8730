"""Routing recorded where a checkout is placed (functions/payment/service.py), and the adapter picked by the PSP an
item records (functions/shared/psp.py client_for)."""

import json

import pytest

from functions.executor import refund as refund_worker
from functions.shared import psp
from functions.shared.config import reload_settings
from functions.shared.errors import PspNotRoutable
from functions.shared.tables import PaymentTables
from tests.integration.test_api import a_checkout, post


def _items(checkout_id: str) -> tuple[list[dict], dict]:
    tables = PaymentTables.from_settings()
    orders = list(tables.get_orders([f"{checkout_id}_a", f"{checkout_id}_b"]).values())
    return orders, tables.get_charge(f"{checkout_id}#USD") or {}


def test_by_default_every_charge_is_stripes_and_its_items_are_as_before(aws_env):
    assert post(a_checkout("chk_default"))[0] == 202
    orders, charge = _items("chk_default")
    assert [o["psp"] for o in orders] == ["stripe", "stripe"] and charge["psp"] == "stripe"
    assert all("psp_route" not in item for item in [*orders, charge, *charge["orders"]])


def test_the_rule_that_chose_the_psp_is_recorded_on_the_charge_and_its_orders(aws_env, monkeypatch):
    rules = {"rules": [{"name": "big-eur", "psp": "stripe", "currencies": ["EUR"]},
                       {"name": "usd-cards", "psp": "stripe", "currencies": ["USD"], "methods": ["card"],
                        "amount": {"currency": "USD", "min": "17.34", "max": "17.34"}}]}
    monkeypatch.setenv("PSP_ROUTING", json.dumps(rules))
    reload_settings()
    assert post(a_checkout("chk_routed"))[0] == 202  # 12.34 + 5 USD
    orders, charge = _items("chk_routed")
    assert [(o["psp"], o["psp_route"]) for o in orders] == [("stripe", "usd-cards")] * 2
    assert (charge["psp"], charge["psp_route"]) == ("stripe", "usd-cards")


def test_an_item_naming_a_psp_without_a_money_path_is_sent_nowhere(monkeypatch):
    def no_call() -> None:
        raise AssertionError("no PSP client may be built")

    monkeypatch.setattr(psp, "client", no_call)
    monkeypatch.setattr(psp, "adyen_client", no_call)
    for name in ("paypal", "Stripe", ""):
        with pytest.raises(PspNotRoutable):
            psp.client_for(name)
    # Adyen charges and refunds are wired (tests/integration/test_executor_adyen.py, test_adyen_refunds.py); a refund
    # recording a PSP no configuration made is sent nowhere
    with pytest.raises(PspNotRoutable):
        refund_worker._psp_of({"psp": "paypal"})
