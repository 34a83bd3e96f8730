"""Query and Scan answers are read page after page (a page is at most 1 MB on DynamoDB); keys BatchGetItem leaves
unprocessed are asked again a bounded number of times, after jittered pauses."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from functions.shared import tables


def _client() -> Any:
    return boto3.session.Session().client("dynamodb", region_name="us-east-1", aws_access_key_id="x",
                                          aws_secret_access_key="x")


def test_every_page_is_read_from_where_the_last_one_stopped() -> None:
    db = _client()
    with Stubber(db) as stub:
        stub.add_response("scan", {"Items": [tables.to_item({"id": "a", "n": 1})],
                                   "LastEvaluatedKey": {"id": {"S": "a"}}}, {"TableName": "t", "ConsistentRead": True})
        # an empty page can still have more after it
        stub.add_response("scan", {"Items": [], "LastEvaluatedKey": {"id": {"S": "b"}}},
                          {"TableName": "t", "ConsistentRead": True, "ExclusiveStartKey": {"id": {"S": "a"}}})
        stub.add_response("scan", {"Items": [tables.to_item({"id": "c", "n": 3})]},
                          {"TableName": "t", "ConsistentRead": True, "ExclusiveStartKey": {"id": {"S": "b"}}})
        assert list(tables._scan(db, "t")) == [{"id": "a", "n": 1}, {"id": "c", "n": 3}]
        stub.assert_no_pending_responses()


def test_a_query_stops_at_its_item_limit_with_pages_of_the_asked_size() -> None:
    db = _client()
    request = {"TableName": "t", "IndexName": "idx", "KeyConditionExpression": "k = :k",
               "ExpressionAttributeValues": {":k": {"S": "v"}}, "Limit": 2}
    with Stubber(db) as stub:
        stub.add_response("query", {"Items": [tables.to_item({"id": "a"}), tables.to_item({"id": "b"})],
                                    "LastEvaluatedKey": {"id": {"S": "b"}}}, request)
        stub.add_response("query", {"Items": [tables.to_item({"id": "c"}), tables.to_item({"id": "d"})],
                                    "LastEvaluatedKey": {"id": {"S": "d"}}},
                          {**request, "ExclusiveStartKey": {"id": {"S": "b"}}})
        found = list(tables._query(db, "t", "idx", "k = :k", {":k": "v"}, page_size=2, max_items=3))
    assert [item["id"] for item in found] == ["a", "b", "c"]


def test_unprocessed_keys_are_asked_again_a_bounded_number_of_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[dict[str, Any]] = []
    pauses: list[float] = []

    class Throttled:
        def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 (boto3's name)
            rounds.append(RequestItems)
            return {"Responses": {}, "UnprocessedKeys": RequestItems}

    monkeypatch.setattr(tables.time, "sleep", pauses.append)
    with pytest.raises(tables.UnprocessedKeysLeft, match="1 keys still unprocessed"):
        tables.batch_get(Throttled(), "t", "id", ["a"])
    assert len(rounds) == tables.BATCH_GET_ROUNDS and len(pauses) == tables.BATCH_GET_ROUNDS - 1
    assert all(0 <= pause <= tables._unprocessed_pause_cap_s(i + 1) for i, pause in enumerate(pauses))
    assert tables.is_transient(tables.UnprocessedKeysLeft("throttled"))
