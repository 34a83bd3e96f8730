"""Internal recon (issue 19) on the local stack: the InternalRecon function of the template, with only its own role
(the stack fixture fails on any call the role does not grant), finds and re-drives what a dead step left out."""

from __future__ import annotations

import json

import pytest

from functions.shared.names import MOVEMENT_SORT_KEY, movement_key, wallet_shard_key
from functions.shared.tables import wallet_shard
from tests.e2e.test_payout_flow import order_when, place
from tests.support.waiting import wait_for

pytestmark = pytest.mark.xdist_group("e2e")


def invoke(stack, fix: bool) -> dict:
    lam = stack.client("lambda")
    (name,) = [f["FunctionName"] for f in lam.list_functions()["Functions"] if "InternalRecon" in f["FunctionName"]]
    # settle_s 0: the orders this test just broke are minutes old at most, and nothing else of it is in flight
    answer = lam.invoke(FunctionName=name, Payload=json.dumps({"fix": fix, "settle_s": 0}).encode())
    assert "FunctionError" not in answer, answer["Payload"].read()
    return json.loads(answer["Payload"].read())


def test_internal_recon_finds_and_redrives_a_lost_wallet_credit_and_ledger_entry(stack, api):
    first, second = place(api, [("seller_irecon_a", "12.34", "USD"), ("seller_irecon_b", "5.00", "USD")])
    for order_id in (first, second):
        order_when(api, order_id, "payment_order_status", {"SUCCESS"}, stack=stack)
    outputs, db = stack.outputs, stack.client("dynamodb")
    wait_for(lambda: db.get_item(TableName=outputs["WalletTableName"],
                                 Key={"account_id": {"S": movement_key("payin", first)},
                                      "sk": {"S": MOVEMENT_SORT_KEY}}).get("Item"), 30, "the wallet credit")
    # The wallet step "never ran" for the first order (movement and balance undone); the ledger step for the second.
    db.delete_item(TableName=outputs["WalletTableName"],
                   Key={"account_id": {"S": movement_key("payin", first)}, "sk": {"S": MOVEMENT_SORT_KEY}})
    db.update_item(TableName=outputs["WalletTableName"],
                   Key={"account_id": {"S": wallet_shard_key("seller_irecon_a", wallet_shard(first))},
                        "sk": {"S": "BALANCE#USD"}},
                   UpdateExpression="ADD pending_minor :minus", ExpressionAttributeValues={":minus": {"N": "-1234"}})
    db.delete_item(TableName=outputs["LedgerTableName"], Key={"transaction_id": {"S": f"payin#{second}"}})

    looked = invoke(stack, fix=False)
    mine = {name: values for name, values in looked["categories"].items() if values["count"]}
    assert mine == {
        "order_success_without_wallet_credit": {"count": 1, "fixed": 0, "amounts": {"USD": 1234}},
        "order_success_without_ledger_entry": {"count": 1, "fixed": 0, "amounts": {"USD": 500}},
    }, looked
    fixed = invoke(stack, fix=True)
    assert (fixed["fixed"], fixed["unexplained"]) == (2, 0), fixed
    again = invoke(stack, fix=True)
    assert again["total"] == 0, again
    bucket = outputs["SettlementBucketName"]
    page = stack.client("s3").get_object(Bucket=bucket, Key=again["reports"]["html"])
    assert page["ContentType"].startswith("text/html")
