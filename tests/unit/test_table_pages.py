"""Query and Scan answers are read page after page (a page is at most 1 MB on DynamoDB)."""

from __future__ import annotations

from typing import Any

from functions.shared import tables


def test_every_page_is_read_from_where_the_last_one_stopped() -> None:
    pages = [{"Items": [tables.to_item({"id": "a", "n": 1})], "LastEvaluatedKey": {"id": {"S": "a"}}},
             {"Items": [], "LastEvaluatedKey": {"id": {"S": "b"}}},  # an empty page can still have more after it
             {"Items": [tables.to_item({"id": "c", "n": 3})]}]
    requests: list[dict[str, Any]] = []

    def read(**request: Any) -> dict[str, Any]:
        requests.append(request)
        return pages[len(requests) - 1]

    assert list(tables._pages(read, {"TableName": "t"})) == [{"id": "a", "n": 1}, {"id": "c", "n": 3}]
    assert requests == [{"TableName": "t"}, {"TableName": "t", "ExclusiveStartKey": {"id": {"S": "a"}}},
                        {"TableName": "t", "ExclusiveStartKey": {"id": {"S": "b"}}}]
