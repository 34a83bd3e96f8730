"""The local stack's Adyen wiring without starting a stack: when the Adyen sandbox is needed, what is replaced."""

from __future__ import annotations

import json

import pytest

from local import __main__ as local_main
from local.stack import LocalStack, Ports, default_adyen_sandbox, routes_to_adyen

EUR_CARDS = json.dumps({"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}]})
USD_STRIPE = json.dumps({"rules": [{"name": "usd", "psp": "stripe", "currencies": ["USD"]}]})


def test_routes_to_adyen_reads_the_rules():
    assert routes_to_adyen(EUR_CARDS)
    assert not routes_to_adyen(USD_STRIPE) and not routes_to_adyen("")


def test_a_routing_naming_adyen_without_the_adyen_sandbox_is_refused():
    with pytest.raises(ValueError, match="Adyen sandbox"):
        LocalStack(psp_routing=EUR_CARDS)


def test_replacements_name_the_sandboxes_and_the_routing_only_when_asked():
    stack = LocalStack(ports=Ports(psp=1, adyen=2), adyen_sandbox=default_adyen_sandbox, psp_routing=EUR_CARDS)
    assert stack._replacements() == {"PSP_API_BASE": "http://127.0.0.1:1",
                                     "ADYEN_CHECKOUT_BASE": "http://127.0.0.1:2/v71",
                                     "ADYEN_MERCHANT_ACCOUNT": "MarketPayECOM", "PSP_ROUTING": EUR_CARDS}
    plain = LocalStack(ports=Ports(psp=1))
    assert plain._replacements() == {"PSP_API_BASE": "http://127.0.0.1:1"}
    assert plain.endpoints()["adyen"] == "off"


def test_a_template_whose_routing_names_adyen_needs_the_adyen_sandbox():
    stack = LocalStack()
    with pytest.raises(ValueError, match="PaymentApi"):
        stack._check_adyen_reachable({"PaymentApi": {"PSP_ROUTING": EUR_CARDS}, "Wallet": {}})
    stack._check_adyen_reachable({"PaymentApi": {"PSP_ROUTING": ""}, "Wallet": {}})


def test_make_run_routes_with_the_given_rules_else_the_templates(tmp_path):
    template = tmp_path / "MarketPay.template.json"
    template.write_text(json.dumps({"Resources": {
        "Fn": {"Type": "AWS::Lambda::Function",
               "Properties": {"Environment": {"Variables": {"PSP_ROUTING": USD_STRIPE}}}},
        "Other": {"Type": "AWS::Lambda::Function", "Properties": {}}}}))
    assert local_main._routing(None, template) == USD_STRIPE
    assert local_main._routing(EUR_CARDS, template) == EUR_CARDS
    assert local_main._routing("", template) == ""
