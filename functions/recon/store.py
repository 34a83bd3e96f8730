"""The Recon table's adapter: file guard (duplicates), run summaries, carried unsettled orders.

Keys (docs/design.md): pk `FILE#<sha256>` with sk `GUARD` (the once-per-content guard), `RUN` (the run's
summary) and `DUPLICATE#<delivery>` (each later delivery of the same content); pk `CARRY#<psp>` with sk
`<payment_order_id>` for orders recorded SUCCESS that no file has settled yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from functions.shared import aws
from functions.shared.config import Settings, settings
from functions.shared.tables import from_item, to_item


class ClaimOutcome(StrEnum):
    NEW = "new"  # this delivery owns the file: process it (or resume an interrupted run of it)
    DONE = "done"  # this very delivery was processed already (an SQS redelivery): nothing to do
    DUPLICATE = "duplicate"  # the same content arrived before under another delivery


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    original: dict[str, Any] | None = None


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


@dataclass
class ReconTable:
    table: str

    @classmethod
    def from_settings(cls, config: Settings | None = None) -> ReconTable:
        return cls((config or settings()).recon_table)

    @property
    def _db(self) -> Any:
        return aws.client("dynamodb")

    # -- files -----------------------------------------------------------------------------------------

    def claim_file(self, sha256: str, psp: str, source_key: str, delivery: str, now: str) -> Claim:
        """Take the guard of this content for this delivery. The same delivery may take it again while its
        run is unfinished (a retry resumes); any other delivery of the same content is a duplicate."""
        item = {"pk": f"FILE#{sha256}", "sk": "GUARD", "status": "processing", "psp": psp,
                "source_key": source_key, "delivery": delivery, "started_at": now}
        try:
            self._db.put_item(
                TableName=self.table, Item=to_item(item),
                ConditionExpression="attribute_not_exists(pk) OR (#status = :processing AND delivery = :delivery)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=to_item({":processing": "processing", ":delivery": delivery}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise
            old = error.response.get("Item")
            original = from_item(old) if old else self.get_guard(sha256) or {}
            if original.get("delivery") == delivery:
                return Claim(ClaimOutcome.DONE, original)
            return Claim(ClaimOutcome.DUPLICATE, original)
        return Claim(ClaimOutcome.NEW)

    def get_guard(self, sha256: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"pk": f"FILE#{sha256}", "sk": "GUARD"}),
                                   ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    def record_duplicate(self, sha256: str, source_key: str, delivery: str, original_key: str, now: str) -> None:
        self._db.put_item(TableName=self.table, Item=to_item({
            "pk": f"FILE#{sha256}", "sk": f"DUPLICATE#{delivery}", "source_key": source_key,
            "duplicate_of": original_key, "seen_at": now,
        }))

    def finish_run(self, sha256: str, summary: dict[str, Any], now: str) -> None:
        """Store the run's summary, then release the guard as done (a crash in between re-runs, harmlessly)."""
        self._db.put_item(TableName=self.table, Item=to_item({
            "pk": f"FILE#{sha256}", "sk": "RUN", "finished_at": now, **summary,
        }))
        self._db.update_item(
            TableName=self.table, Key=to_item({"pk": f"FILE#{sha256}", "sk": "GUARD"}),
            UpdateExpression="SET #status = :done, finished_at = :now",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=to_item({":done": "done", ":now": now}),
        )

    def get_run(self, sha256: str) -> dict[str, Any] | None:
        answer = self._db.get_item(TableName=self.table, Key=to_item({"pk": f"FILE#{sha256}", "sk": "RUN"}),
                                   ConsistentRead=True)
        return from_item(answer["Item"]) if "Item" in answer else None

    # -- carried orders --------------------------------------------------------------------------------

    def carried(self, psp: str) -> dict[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": to_item({":pk": f"CARRY#{psp}"}), "ConsistentRead": True,
        }
        found: dict[str, dict[str, Any]] = {}
        while True:
            answer = self._db.query(**kwargs)
            for item in map(from_item, answer.get("Items", [])):
                found[item["sk"]] = item
            if "LastEvaluatedKey" not in answer:
                return found
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def carry(self, psp: str, order: dict[str, Any], first_seen: str) -> None:
        """Start carrying an order; an order carried already keeps its first-seen date."""
        item = {"pk": f"CARRY#{psp}", "sk": order["payment_order_id"], "first_seen": first_seen,
                "payment_order_id": order["payment_order_id"], "psp_reference": order.get("psp_reference"),
                "amount_minor": int(order["amount_minor"]), "currency": order["currency"],
                "created_at": order.get("created_at")}
        try:
            self._db.put_item(TableName=self.table, Item=to_item(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise

    def mark_raised(self, psp: str, payment_order_id: str, now: str) -> bool:
        """True for the one run that raises the order; later runs see it raised already."""
        try:
            self._db.update_item(
                TableName=self.table, Key=to_item({"pk": f"CARRY#{psp}", "sk": payment_order_id}),
                UpdateExpression="SET raised_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(raised_at)",
                ExpressionAttributeValues=to_item({":now": now}),
            )
        except ClientError as error:
            if _code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def clear(self, psp: str, payment_order_id: str) -> None:
        self._db.delete_item(TableName=self.table, Key=to_item({"pk": f"CARRY#{psp}", "sk": payment_order_id}))


@dataclass
class CarryStore:
    """The matcher's view of the carried orders of one PSP."""

    table: ReconTable
    psp: str

    def carried(self) -> dict[str, dict[str, Any]]:
        return self.table.carried(self.psp)

    def carry(self, order: dict[str, Any], first_seen: str) -> None:
        self.table.carry(self.psp, order, first_seen)

    def mark_raised(self, payment_order_id: str, now: str) -> bool:
        return self.table.mark_raised(self.psp, payment_order_id, now)

    def clear(self, payment_order_id: str) -> None:
        self.table.clear(self.psp, payment_order_id)
