"""Reconciliation reports for on-call: the settlement reports (one per PSP file, functions/recon/service.py) and the
internal ones (functions/recon/internal.py), as the recon functions wrote them to the settlement bucket.

A report is its JSON (`<stem>.json`) with its CSV and HTML beside it; a duplicate file's note
(`<name>.duplicate.json`) is listed as a report of kind `duplicate`. Nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from functions.shared import aws
from functions.shared.money import Money, MoneyError
from functions.shared.names import INTERNAL_REPORTS_PREFIX, REPORTS_PREFIX
from ops.resources import OpsError

INTERNAL = "internal"
_DUPLICATE = ".duplicate.json"


@dataclass
class ReportSummary:
    key: str  # the JSON report
    source: str  # the PSP of a settlement report, or `internal`
    kind: str  # settlement | internal | duplicate
    written_at: str  # when the report was written (the object's time, UTC)
    html_key: str | None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def categories(self) -> dict[str, dict[str, Any]]:
        """category -> {count, amounts: {currency: decimal string}}, only the categories with rows, in both kinds
        (the internal report keeps minor units, the settlement one decimal strings)."""
        found: dict[str, dict[str, Any]] = {}
        for name, values in (self.summary.get("categories") or {}).items():
            if not values.get("count"):
                continue
            amounts = {cur: _major(value, cur) for cur, value in sorted((values.get("amounts") or {}).items())}
            found[name] = {"count": values["count"], "amounts": amounts,
                           **({"fixed": values["fixed"]} if "fixed" in values else {})}
        return found

    def to_dict(self) -> dict[str, Any]:
        totals = {name: self.summary[name] for name in ("total", "fixed", "unexplained") if name in self.summary}
        return {"key": self.key, "source": self.source, "kind": self.kind, "written_at": self.written_at,
                "html_key": self.html_key, **totals, "categories": self.categories}


def _major(value: Any, currency: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return Money(int(value), currency).to_major()
    except (MoneyError, TypeError, ValueError):
        return str(value)


def _describe(key: str) -> tuple[str, str] | None:
    """(source, kind) of a report's JSON key; None for the CSV and HTML beside it."""
    if not key.endswith(".json"):
        return None
    if key.startswith(INTERNAL_REPORTS_PREFIX):
        return INTERNAL, "internal"
    source = key.removeprefix(REPORTS_PREFIX).split("/", 1)[0]
    return source, "duplicate" if key.endswith(_DUPLICATE) else "settlement"


def _html_key(key: str, kind: str, present: set[str]) -> str | None:
    html = key.removesuffix(".json") + ".html"
    return html if kind != "duplicate" and html in present else None


def list_reports(bucket: str, *, source: str | None = None, day: str | None = None, limit: int = 50
                 ) -> list[ReportSummary]:
    """The newest `limit` reports (newest first) of one source (a PSP or `internal`) and/or written on one day
    (YYYY-MM-DD, UTC), each with its summary read from its JSON."""
    if day is not None:
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            raise OpsError(f"--date {day!r}: use YYYY-MM-DD") from None
    prefix = INTERNAL_REPORTS_PREFIX if source == INTERNAL else f"{REPORTS_PREFIX}{source}/" if source else \
        REPORTS_PREFIX
    objects: dict[str, datetime] = {}
    for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = obj["LastModified"].astimezone(UTC)
    present = set(objects)
    found: list[ReportSummary] = []
    for key, modified in objects.items():
        described = _describe(key)
        if described is None or (day is not None and modified.strftime("%Y-%m-%d") != day):
            continue
        found.append(ReportSummary(key, described[0], described[1], modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   _html_key(key, described[1], present)))
    found.sort(key=lambda r: (r.written_at, r.key), reverse=True)
    found = found[:limit]
    for report in found:
        report.summary = _read_summary(bucket, report.key)
    return found


def load_report(bucket: str, key: str) -> ReportSummary:
    """One report by its key (its .json, .csv or .html: the JSON is read)."""
    json_key = key if key.endswith(".json") else key.removesuffix(".csv").removesuffix(".html") + ".json"
    described = _describe(json_key)
    if described is None or not json_key.startswith(REPORTS_PREFIX):
        raise OpsError(f"{key} is not a report (reports live under {REPORTS_PREFIX})")
    s3 = aws.client("s3")
    try:
        head = s3.head_object(Bucket=bucket, Key=json_key)
    except ClientError as error:
        if _missing(error):
            raise OpsError(f"no report {json_key} in bucket {bucket}: `ops recon reports` lists them") from None
        raise
    html: str | None = json_key.removesuffix(".json") + ".html"
    try:
        s3.head_object(Bucket=bucket, Key=html)
    except ClientError as error:
        if not _missing(error):
            raise
        html = None
    written = head["LastModified"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = ReportSummary(json_key, described[0], described[1], written, html if described[1] != "duplicate"
                           else None)
    report.summary = _read_summary(bucket, json_key)
    return report


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


# Both writers put the summary first and the list last (ReportBuilder.write_json, internal.write_json): the
# summary is read from the head of the object, not the whole file (a bad settlement file's report can hold a
# discrepancy per row).
SUMMARY_BYTES = 64 * 1024
_LISTS = ('\n "discrepancies": [', '\n "findings": [')


def _read_summary(bucket: str, key: str) -> dict[str, Any]:
    """The report's JSON without its list of findings/discrepancies (the summary on-call reads first)."""
    s3 = aws.client("s3")
    head = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{SUMMARY_BYTES - 1}")["Body"].read()
    text = head.decode("utf-8", errors="ignore")
    data: Any = None
    for marker in _LISTS:
        cut = text.find(marker)
        if cut > 0:
            try:
                data = json.loads(text[:cut].rstrip().rstrip(",") + "\n}")
            except ValueError:
                data = None
            break
    if data is None:  # small (read whole already), or not in the writers' layout: read it all
        body = head if len(head) < SUMMARY_BYTES else s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            data = json.loads(body)
        except ValueError:
            raise OpsError(f"{key} is not JSON: read it with `aws s3 cp s3://{bucket}/{key} -`") from None
    if not isinstance(data, dict):
        raise OpsError(f"{key} is not a report")
    return {name: value for name, value in data.items() if name not in ("findings", "discrepancies")}
