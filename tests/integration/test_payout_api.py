"""The pay-out routes of the API handler (issue 15), called as API Gateway calls them, against moto."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from functions.payment import api, finalize, payouts
from functions.shared import clock
from functions.shared.money import Money
from functions.shared.tables import PaymentTables, PayoutsTable, WalletTable
from functions.wallet import movements
from tests.integration.support import place, work_of
from tests.support.aws import drain
from tests.support.events import FakeContext, http_event


def call(method, path, body=None, params=None, route=None, headers=None, query=None):
    event = http_event(method, path, body, path_parameters=params, route_key=route)
    event["headers"] = {**event.get("headers", {}), **(headers or {})}
    if query is not None:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    answer = api.handler(event, FakeContext())
    text = answer.get("body") or ""
    is_json = "json" in answer.get("headers", {}).get("Content-Type", "application/json")
    return answer["statusCode"], (json.loads(text) if is_json and text else text)


def put_seller(seller, body):
    return call("PUT", f"/v1/sellers/{seller}", body, {"seller_account": seller}, "PUT /v1/sellers/{seller_account}")


def release(order_id):
    return call("POST", f"/v1/payments/{order_id}/release", params={"payment_order_id": order_id},
                route="POST /v1/payments/{payment_order_id}/release")


def get_order(order_id):
    return call("GET", f"/v1/payments/{order_id}", params={"payment_order_id": order_id},
                route="GET /v1/payments/{payment_order_id}")


def settle(checkout_id, orders=(("seller_a", "12.34", "USD"), ("seller_b", "5.00", "USD"))):
    """Place a checkout and run its charge to SUCCESS through finalize (the PSP's answer given)."""
    ids = place(checkout_id, orders=orders)
    tables = PaymentTables.from_settings()
    charge = tables.begin_charge_attempt(f"{checkout_id}#USD", 1, clock.iso(), clock.iso())
    tables.mark_orders_executing([o["payment_order_id"] for o in charge["orders"]], clock.iso())
    work = work_of(checkout_id)
    finalize.finalize({**work.model_dump(), "charge": {"outcome": "succeeded", "psp_reference": "pi_1",
                                                       "psp_status": "succeeded", "charge_id": "ch_1"}})
    return ids


# --- sellers -------------------------------------------------------------------------------------------------


def test_put_then_get_a_seller(aws_env):
    status, body = put_seller("seller_a", {"psp_account_id": "acct_1Abc", "commission_bps": 1000,
                                           "auto_release_days": 14})
    assert status == 200
    assert {k: body[k] for k in ("seller_account", "psp_account_id", "commission_bps", "auto_release_days")} == {
        "seller_account": "seller_a", "psp_account_id": "acct_1Abc", "commission_bps": 1000,
        "auto_release_days": 14}
    status, got = call("GET", "/v1/sellers/seller_a", params={"seller_account": "seller_a"},
                       route="GET /v1/sellers/{seller_account}")
    assert (status, got) == (200, body)
    status, missing = call("GET", "/v1/sellers/nope", params={"seller_account": "nope"},
                           route="GET /v1/sellers/{seller_account}")
    assert status == 404 and missing["error"]["code"] == "seller_not_found"


@pytest.mark.parametrize(("body", "code"), [
    ({"psp_account_id": "acct_", "commission_bps": 10}, "invalid_psp_account_id"),
    ({"psp_account_id": "ba_123", "commission_bps": 10}, "invalid_psp_account_id"),
    ({"psp_account_id": 12, "commission_bps": 10}, "invalid_psp_account_id"),
    ({"commission_bps": 10001}, "invalid_commission"),
    ({"commission_bps": -1}, "invalid_commission"),
    ({"commission_bps": 10.5}, "invalid_commission"),
    ({"commission_bps": "100"}, "invalid_commission"),
    ({"commission_bps": True}, "invalid_commission"),
    ({"commission_bps": 10, "auto_release_days": 366}, "invalid_auto_release_days"),
    ({}, "missing_field"),
    ({"commission_bps": 10, "bank": "x"}, "unknown_field"),
])
def test_invalid_seller_bodies_are_422_with_their_code(aws_env, body, code):
    status, answer = put_seller("seller_a", body)
    assert (status, answer["error"]["code"]) == (422, code)
    assert payouts.SellersTable.from_settings().get("seller_a") is None


# --- release -------------------------------------------------------------------------------------------------


def test_finalize_holds_each_success_order_with_its_sellers_auto_release(aws_env):
    put_seller("seller_a", {"commission_bps": 100, "auto_release_days": 2})
    a, b = settle("chk_h")
    table = PayoutsTable.from_settings()
    held_a, held_b = table.get(a), table.get(b)
    assert (held_a["payout_status"], held_a["gross_minor"], held_a["charge_id"]) == ("HELD", 1234, "ch_1")
    assert clock.parse_iso(held_a["auto_release_at"]) - clock.parse_iso(held_a["settled_at"]) == \
        timedelta(days=2)
    assert held_a["due_at"] == held_a["auto_release_at"]
    assert "auto_release_at" not in held_b and "due_at" not in held_b  # seller_b not registered: waits for delivery


def test_release_is_202_then_200_with_the_same_body_and_sends_one_message(aws_env):
    put_seller("seller_a", {"psp_account_id": "acct_A", "commission_bps": 1000})
    a, _ = settle("chk_r")
    status, body = release(a)
    assert status == 202
    assert {k: v for k, v in body.items() if k != "released_at"} == {
        "payment_order_id": a, "seller_account": "seller_a", "currency": "USD", "gross": "12.34",
        "commission": "1.23", "seller_net": "11.11"}  # 123.4 rounded down: the seller keeps the rest
    # the seller's commission changes after the release: the release's terms stay frozen
    put_seller("seller_a", {"psp_account_id": "acct_A", "commission_bps": 0})
    assert release(a) == (200, body)
    assert [json.loads(m) for m in drain(aws_env["PAYOUTS_QUEUE_URL"])] == [{"payment_order_id": a}]
    item = PayoutsTable.from_settings().get(a)
    assert item["payout_status"] == "RELEASED" and item["due_at"] > item["released_at"]  # the sweeper's grace
    status, order = get_order(a)
    assert (order["payout_status"], order["commission"], order["seller_net"], order["transfer_id"],
            order["payout_failure_reason"]) == ("RELEASED", "1.23", "11.11", None, None)


def test_a_release_that_keeps_losing_its_race_to_refunds_is_a_503_that_wrote_nothing(aws_env, monkeypatch):
    # Given refunds of the held order that succeed just before each of the release's writes (the gross shrinks)
    a, _ = settle("chk_race")
    table = PayoutsTable.from_settings()
    real = payouts.release_payout

    def refund_first(item, now, payouts_table, sellers):
        table._db.update_item(TableName=table.table, Key={"payment_order_id": {"S": a}},
                              UpdateExpression="ADD gross_minor :less",
                              ExpressionAttributeValues={":less": {"N": "-1"}})
        return real(item, now, payouts_table, sellers)

    monkeypatch.setattr(payouts, "release_payout", refund_first)
    # When the storefront releases: a clear 503 to send again, not a 500, and the pay-out still HELD
    status, body = release(a)
    assert (status, body["error"]["code"]) == (503, "concurrent_change"), body
    assert table.get(a)["payout_status"] == "HELD" and drain(aws_env["PAYOUTS_QUEUE_URL"]) == []
    # Then the same request, sent again without the race, releases
    monkeypatch.setattr(payouts, "release_payout", real)
    assert release(a)[0] == 202


def test_an_unregistered_sellers_order_is_released_at_the_default_commission(aws_env):
    _, b = settle("chk_u")
    status, body = release(b)
    assert status == 202 and (body["commission"], body["seller_net"]) == ("0.00", "5.00")
    assert PayoutsTable.from_settings().get(b)["commission_bps"] == 0


def test_release_of_unknown_or_unsettled_orders(aws_env):
    status, body = release("nope")
    assert (status, body["error"]["code"]) == (404, "payment_order_not_found")
    (order_id, _) = place("chk_n")
    status, body = release(order_id)
    assert (status, body["error"]["code"]) == (409, "order_not_settled")
    assert PayoutsTable.from_settings().get(order_id) is None
    assert drain(aws_env["PAYOUTS_QUEUE_URL"]) == []


def test_an_order_settled_before_payouts_existed_gets_its_item_on_release(aws_env):
    a, _ = settle("chk_old")
    PayoutsTable.from_settings()._db.delete_item(TableName=aws_env["PAYOUTS_TABLE"],
                                                  Key={"payment_order_id": {"S": a}})
    status, body = release(a)
    assert status == 202 and body["gross"] == "12.34"
    assert PayoutsTable.from_settings().get(a)["charge_id"] == "ch_1"


def test_a_lost_send_leaves_the_payout_due_for_the_sweeper(aws_env, monkeypatch):
    a, _ = settle("chk_l")
    monkeypatch.setattr(payouts.settings(), "payouts_queue_url", "https://sqs.us-east-1.amazonaws.com/1/gone")
    status, _ = release(a)
    assert status == 202
    item = PayoutsTable.from_settings().get(a)
    assert item["payout_status"] == "RELEASED" and item["sweep_shard"] and item["due_at"]


def test_registering_an_account_wakes_the_waiting_payouts(aws_env):
    a, _ = settle("chk_w")
    release(a)
    drain(aws_env["PAYOUTS_QUEUE_URL"])
    table = PayoutsTable.from_settings()
    assert table.await_seller(a, "seller_a", "2099-01-01T00:00:00.000Z", clock.iso())
    put_seller("seller_a", {"commission_bps": 0})  # no account yet: nothing to wake
    assert drain(aws_env["PAYOUTS_QUEUE_URL"]) == []
    put_seller("seller_a", {"psp_account_id": "acct_A", "commission_bps": 0})
    assert [json.loads(m) for m in drain(aws_env["PAYOUTS_QUEUE_URL"])] == [{"payment_order_id": a}]
    assert "awaiting_seller" not in table.get(a)


# --- balance and statement -----------------------------------------------------------------------------------


def wallet_history():
    """A pay-in, release and transfer of one order and a pay-in of another, through the wallet's own code."""
    usd = lambda minor: Money(minor, "USD")  # noqa: E731
    movements.credit_pending("seller_a", "po_1", usd(1000), "2026-12-01T10:00:00.000Z")
    movements.credit_pending("seller_a", "po_2", usd(500), "2026-12-01T11:00:00.000Z")
    movements.release("seller_a", "po_1", usd(1000), usd(100), "2026-12-02T10:00:00.000Z")
    movements.transfer_out("seller_a", "po_1", usd(900), "tr_1", "2026-12-03T10:00:00.000Z")
    movements.credit_pending("seller_b", "po_3", Money(700, "EUR"), "2026-12-01T10:00:00.000Z")


def test_balance_per_currency_in_decimal_strings(aws_env):
    wallet_history()
    status, body = call("GET", "/v1/sellers/seller_a/balance", params={"seller_account": "seller_a"},
                        route="GET /v1/sellers/{seller_account}/balance")
    assert status == 200
    assert body == {"seller_account": "seller_a", "balances": {
        "USD": {"pending": "5.00", "available": "0.00", "transferred": "9.00", "owed": "0.00"}}}
    assert WalletTable.from_settings().balances("nobody") == {}


def statement(seller, query=None, accept=None):
    return call("GET", f"/v1/sellers/{seller}/statement", params={"seller_account": seller},
                route="GET /v1/sellers/{seller_account}/statement", query=query or {},
                headers={"accept": accept} if accept else {})


def test_statement_lists_the_window_oldest_first(aws_env):
    wallet_history()
    status, lines = statement("seller_a", {"from": "2026-12-01T10:30:00Z", "to": "2026-12-03T10:00:00Z"})
    assert status == 200
    assert [(ln["kind"], ln["payment_order_id"], ln["pending"], ln["available"]) for ln in lines] == [
        ("payin", "po_2", "5.00", "0.00"), ("release", "po_1", "-10.00", "9.00")]  # `to` excluded
    assert (lines[1]["gross"], lines[1]["commission"], lines[1]["net"]) == ("10.00", "1.00", "9.00")
    status, everything = statement("seller_a", {"from": "2026-11-30T00:00:00Z", "to": "2026-12-04T00:00:00Z"})
    assert [ln["kind"] for ln in everything] == ["payin", "payin", "release", "transfer"]
    assert everything[-1]["transfer_id"] == "tr_1" and everything[-1]["transferred"] == "9.00"


def test_statement_as_csv(aws_env):
    wallet_history()
    status, text = statement("seller_a", {"from": "2026-11-30T00:00:00Z", "to": "2026-12-04T00:00:00Z"},
                             accept="text/csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["kind"], r["payment_order_id"], r["net"], r["transfer_id"]) for r in rows] == [
        ("payin", "po_1", "", ""), ("payin", "po_2", "", ""), ("release", "po_1", "9.00", ""),
        ("transfer", "po_1", "9.00", "tr_1")]


@pytest.mark.parametrize("query", [{"from": "yesterday"}, {"to": "2026-12-01T00:00:00"},
                                   {"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
                                   {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}])
def test_bad_statement_windows_are_422(aws_env, query):
    status, body = statement("seller_a", query)
    assert status == 422 and body["error"]["code"] in {"invalid_time", "invalid_time_window"}


def test_statement_defaults_to_the_last_30_days(aws_env):
    now = clock.now()
    movements.credit_pending("seller_a", "po_new", Money(100, "USD"), clock.iso(now))
    movements.credit_pending("seller_a", "po_old", Money(100, "USD"),
                             clock.iso(now - timedelta(days=31)))
    clock.advance(1)
    status, lines = statement("seller_a")
    assert status == 200 and [ln["payment_order_id"] for ln in lines] == ["po_new"]
