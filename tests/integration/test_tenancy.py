"""Tenant isolation (issue 21): checkouts, orders, refunds and sellers belong to a client; another client's id
answers 404; two clients use the same ids without clashing. The API handler called as API Gateway calls it (the
authorizer's context naming the client), against moto."""

from __future__ import annotations

import json

import pytest

from functions.auth import tenancy
from functions.payment import api, finalize
from functions.shared import clock
from functions.shared.money import Money
from functions.shared.names import DEFAULT_CLIENT_ID, SCOPES
from functions.shared.tables import PaymentTables
from functions.wallet import movements
from tests.integration.support import work_of
from tests.support.events import FakeContext, http_event

SHOP_A, SHOP_B = "shop_a", "shop_b"


def call(client: str, method: str, path: str, body=None, params=None, headers=None):
    """(status, body, headers) of one request of `client`'s key (every scope)."""
    event = http_event(method, path, body, path_parameters=params)
    event["requestContext"]["authorizer"] = {"lambda": {"client_id": client, "key_id": "mk_test_tenant",
                                                        "scopes": " ".join(SCOPES)}}
    event["headers"] = {**event.get("headers", {}), **(headers or {})}
    answer = api.handler(event, FakeContext())
    text = answer.get("body") or ""
    is_json = "json" in answer.get("headers", {}).get("Content-Type", "application/json")
    return answer["statusCode"], (json.loads(text) if is_json and text else text), answer.get("headers", {})


def checkout(checkout_id: str, orders: list[tuple[str, str, str]]) -> dict:
    """orders: (payment_order_id, seller_account, amount in USD)."""
    return {"buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id,
            "credit_card_info": {"payment_method": "pm_card_visa"},
            "payment_orders": [{"payment_order_id": o, "seller_account": s, "amount": a, "currency": "USD"}
                               for o, s, a in orders]}


def place(client: str, body: dict):
    return call(client, "POST", "/v1/payments", body)


def settle(client: str, checkout_id: str, psp_reference: str) -> None:
    """Run the client's checkout to SUCCESS through finalize (the PSP's answer given), and credit its sellers'
    wallets as the workflow's wallet step does: all on internal ids, as the workflow sees them."""
    internal = tenancy.scoped(client, checkout_id)
    tables = PaymentTables.from_settings()
    charge = tables.begin_charge_attempt(f"{internal}#USD", 1, clock.iso(), clock.iso())
    tables.mark_orders_executing([o["payment_order_id"] for o in charge["orders"]], clock.iso())
    finalize.finalize({**work_of(internal).model_dump(),
                       "charge": {"outcome": "succeeded", "psp_reference": psp_reference, "psp_status": "succeeded",
                                  "charge_id": f"ch_{psp_reference}"}})
    for order in charge["orders"]:
        movements.credit_pending(order["seller_account"], order["payment_order_id"],
                                 Money(int(order["amount_minor"]), "USD"), clock.iso())


def no_internal_id(body) -> None:
    assert tenancy.SEPARATOR not in json.dumps(body), body


def get(client: str, path: str, params: dict, headers=None):
    return call(client, "GET", path, params=params, headers=headers)


def test_two_clients_use_the_same_ids_without_clashing_and_each_sees_its_own(aws_env):
    # Given two clients placing the same checkout_id and payment_order_ids, with different amounts
    status_a, body_a, headers_a = place(SHOP_A, checkout("chk_1", [("po_1", "seller_x", "10.00"),
                                                                   ("po_2", "seller_y", "5.00")]))
    status_b, body_b, headers_b = place(SHOP_B, checkout("chk_1", [("po_1", "seller_x", "7.00"),
                                                                   ("po_2", "seller_y", "3.00")]))
    # Then both are accepted as new checkouts, each answered with its own ids
    assert (status_a, status_b) == (202, 202)
    assert "Idempotent-Replayed" not in headers_a and "Idempotent-Replayed" not in headers_b
    for body, amounts in ((body_a, ["10.00", "5.00"]), (body_b, ["7.00", "3.00"])):
        assert body["checkout_id"] == "chk_1"
        assert [(o["payment_order_id"], o["seller_account"], o["checkout_id"], o["amount"])
                for o in body["payment_orders"]] == [("po_1", "seller_x", "chk_1", amounts[0]),
                                                     ("po_2", "seller_y", "chk_1", amounts[1])]
        no_internal_id(body)
    # two checkouts stored, one per client
    tables = PaymentTables.from_settings()
    assert tables.get_checkout("chk_1") is None
    assert tables.get_checkout("shop_a~chk_1")["payment_orders"][0]["amount_minor"] == 1000
    assert tables.get_checkout("shop_b~chk_1")["payment_orders"][0]["amount_minor"] == 700

    # When each reads back the checkout and an order
    for client, amount in ((SHOP_A, "10.00"), (SHOP_B, "7.00")):
        status, read, _ = get(client, "/v1/checkouts/chk_1", {"checkout_id": "chk_1"})
        assert status == 200 and [o["amount"] for o in read["payment_orders"]][0] == amount
        status, order, _ = get(client, "/v1/payments/po_1", {"payment_order_id": "po_1"})
        assert status == 200 and order["amount"] == amount and order["checkout_id"] == "chk_1"
        no_internal_id(read), no_internal_id(order)

    # And a replay of A's checkout as A is still a replay, answered as first
    status, replay, headers = place(SHOP_A, checkout("chk_1", [("po_1", "seller_x", "10.00"),
                                                               ("po_2", "seller_y", "5.00")]))
    assert (status, headers.get("Idempotent-Replayed"), replay) == (202, "true", body_a)


def test_another_clients_ids_answer_404_and_a_clients_answers_name_only_its_own_ids(aws_env):
    # Given A with a settled checkout, a registered seller, a release and a refund of its own
    assert place(SHOP_A, checkout("chk_a", [("po_a", "seller_a", "20.00"), ("po_a2", "seller_a", "4.00")]))[0] == 202
    settle(SHOP_A, "chk_a", "pi_a")
    assert call(SHOP_A, "PUT", "/v1/sellers/seller_a", {"commission_bps": 1000},
                {"seller_account": "seller_a"})[0] == 200
    assert call(SHOP_A, "POST", "/v1/payments/po_a/release", params={"payment_order_id": "po_a"})[0] == 202
    assert call(SHOP_A, "POST", "/v1/payments/po_a2/refunds", {"refund_id": "rf_a", "amount": "1.00"},
                {"payment_order_id": "po_a2"})[0] == 202
    # and B with the same kinds of things under ids of its own (rf_a too: refund ids do not clash either)
    assert place(SHOP_B, checkout("chk_b", [("po_b", "seller_b", "8.00"), ("po_b2", "seller_b", "2.00")]))[0] == 202
    settle(SHOP_B, "chk_b", "pi_b")

    # When B asks for A's order, checkout, refund, seller, balance, statement, release and refund
    answers = {
        "order": get(SHOP_B, "/v1/payments/po_a", {"payment_order_id": "po_a"}),
        "checkout": get(SHOP_B, "/v1/checkouts/chk_a", {"checkout_id": "chk_a"}),
        "refund": get(SHOP_B, "/v1/refunds/rf_a", {"refund_id": "rf_a"}),
        "seller": get(SHOP_B, "/v1/sellers/seller_a", {"seller_account": "seller_a"}),
        "balance": get(SHOP_B, "/v1/sellers/seller_a/balance", {"seller_account": "seller_a"}),
        "statement": get(SHOP_B, "/v1/sellers/seller_a/statement", {"seller_account": "seller_a"}),
        "statement_csv": get(SHOP_B, "/v1/sellers/seller_a/statement", {"seller_account": "seller_a"},
                             {"accept": "text/csv"}),
        "release": call(SHOP_B, "POST", "/v1/payments/po_a/release", params={"payment_order_id": "po_a"}),
        "refund_create": call(SHOP_B, "POST", "/v1/payments/po_a2/refunds", {"refund_id": "rf_b_new"},
                              {"payment_order_id": "po_a2"}),
    }
    # Then each is a 404 that names the id as B sent it, never an internal one
    assert {name: status for name, (status, _, _) in answers.items()} == {name: 404 for name in answers}
    for name, (_, body, _) in answers.items():
        assert body["error"]["code"] in {"not_found", "payment_order_not_found", "refund_not_found",
                                         "seller_not_found"}, name
        no_internal_id(body)
    assert answers["order"][1]["error"]["message"] == "payment order po_a not found"

    # And nothing of A's moved: its order is still released once, its refund still the only one
    status, order_a, _ = get(SHOP_A, "/v1/payments/po_a2", {"payment_order_id": "po_a2"})
    assert status == 200 and [r["refund_id"] for r in order_a["refunds"]] == ["rf_a"]
    assert call(SHOP_A, "POST", "/v1/payments/po_a/release", params={"payment_order_id": "po_a"})[0] == 200

    # And B's own answers, wherever they nest an id, show B's external ids only
    own = [
        call(SHOP_B, "PUT", "/v1/sellers/seller_b", {"commission_bps": 500}, {"seller_account": "seller_b"}),
        call(SHOP_B, "POST", "/v1/payments/po_b/release", params={"payment_order_id": "po_b"}),
        call(SHOP_B, "POST", "/v1/payments/po_b2/refunds", {"refund_id": "rf_a", "amount": "0.50"},
             {"payment_order_id": "po_b2"}),
        get(SHOP_B, "/v1/refunds/rf_a", {"refund_id": "rf_a"}),
        get(SHOP_B, "/v1/payments/po_b2", {"payment_order_id": "po_b2"}),
        get(SHOP_B, "/v1/checkouts/chk_b", {"checkout_id": "chk_b"}),
        get(SHOP_B, "/v1/sellers/seller_b", {"seller_account": "seller_b"}),
        get(SHOP_B, "/v1/sellers/seller_b/balance", {"seller_account": "seller_b"}),
        get(SHOP_B, "/v1/sellers/seller_b/statement", {"seller_account": "seller_b"}),
        get(SHOP_B, "/v1/sellers/seller_b/statement", {"seller_account": "seller_b"}, {"accept": "text/csv"}),
    ]
    assert [status for status, _, _ in own] == [200, 202, 202, 200, 200, 200, 200, 200, 200, 200]
    for _, body, _ in own:
        no_internal_id(body)
    release, refund, order = own[1][1], own[2][1], own[4][1]
    assert (release["payment_order_id"], release["seller_account"]) == ("po_b", "seller_b")
    assert (refund["refund_id"], refund["payment_order_id"], refund["amount"]) == ("rf_a", "po_b2", "0.50")
    assert [r["refund_id"] for r in order["refunds"]] == ["rf_a"] and order["seller_account"] == "seller_b"
    balance, statement, csv_text = own[7][1], own[8][1], own[9][1]
    assert balance["seller_account"] == "seller_b" and balance["balances"]["USD"]["pending"] == "10.00"
    assert sorted(line["payment_order_id"] for line in statement) == ["po_b", "po_b2"]
    assert "po_b2" in csv_text


def test_the_default_clients_ids_stay_as_they_are_and_reach_no_other_clients_items(aws_env):
    # Given the default client (the development key, every id stored before keys) and B, with the same ids
    assert place(DEFAULT_CLIENT_ID, checkout("chk_1", [("po_1", "seller_x", "1.00")]))[0] == 202
    assert place(SHOP_B, checkout("chk_1", [("po_1", "seller_x", "2.00")]))[0] == 202
    # Then the default client's items are stored under the ids it sent, B's under its prefix
    tables = PaymentTables.from_settings()
    assert tables.get_order("po_1")["amount_minor"] == 100 and tables.get_order("shop_b~po_1")["amount_minor"] == 200
    # And neither reaches the other's: not even by sending an internal id (`~` is in no external id)
    assert get(DEFAULT_CLIENT_ID, "/v1/payments/po_1", {"payment_order_id": "po_1"})[1]["amount"] == "1.00"
    assert get(SHOP_B, "/v1/payments/po_1", {"payment_order_id": "po_1"})[1]["amount"] == "2.00"
    for client, path_id in ((DEFAULT_CLIENT_ID, "shop_b~po_1"), (SHOP_B, "shop_b~po_1"), (SHOP_B, "default~po_1")):
        status, body, _ = get(client, f"/v1/payments/{path_id}", {"payment_order_id": path_id})
        assert status == 404, (client, path_id, body)


@pytest.mark.parametrize("client_id", ["shop~1", "a" * 41, "", "shop b", "shop/1"])
def test_a_key_is_never_issued_for_a_client_id_that_could_not_prefix_ids(aws_env, client_id):
    from functions.auth.keys import issue
    from functions.shared.tables import ApiKeysTable

    with pytest.raises(ValueError, match="client id"):
        issue(ApiKeysTable.from_settings(), client_id)


def test_a_request_whose_key_names_a_client_id_no_key_may_have_is_refused(aws_env):
    status, body, _ = call("shop~a", "GET", "/v1/payments/po_1", params={"payment_order_id": "po_1"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
