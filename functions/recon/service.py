"""One settlement file, end to end: survey (hash + validate), guard, match, report, fix, review.

Two passes over the object, both streamed: the first hashes the bytes and parses every row without any
effect, so a file that cannot be read is quarantined before anything happened, and the content hash is
known before the duplicate guard is taken; the second parses again and matches. Every effect of the second
pass is idempotent (conditional writes, deterministic execution names and ledger ids, overwritten reports),
so a run that dies half-way is simply run again by the SQS retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from functions.recon import bank, parsers
from functions.recon.adapters import AwsFixes, DynamoLookup, ReviewQueue
from functions.recon.closing import Window
from functions.recon.config import ReconSettings, check_shared, recon_settings
from functions.recon.errors import UnparseableFile
from functions.recon.gctune import batch_collection
from functions.recon.matching import Matcher, Policy
from functions.recon.outcomes import Outcome
from functions.recon.report import ReportBuilder, upload
from functions.recon.rows import ChargeBlock, RowKind, SettlementRow
from functions.recon.screening import screen
from functions.recon.store import CarryStore, ClaimOutcome, ReconTable
from functions.shared import aws, clock
from functions.shared.config import Settings, settings
from functions.shared.names import OFFLINE_PSP, UNRECORDED_PSP
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable

INCOMING = "incoming/"


class RunStatus(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    ALREADY_DONE = "already_done"
    QUARANTINED = "quarantined"
    GONE = "gone"


@dataclass(frozen=True)
class SettlementObject:
    bucket: str
    key: str
    delivery: str  # one S3 write of the key (its event sequencer): SQS redeliveries share it, a re-upload not
    size: int | None = None  # bytes, as the S3 notification tells it (checked again by HeadObject)

    @property
    def psp(self) -> str:
        return self.key[len(INCOMING):].split("/", 1)[0]

    @property
    def name(self) -> str:
        rest = self.key[len(INCOMING):].split("/", 1)
        return rest[1] if len(rest) == 2 else rest[0]


@dataclass
class RunResult:
    status: RunStatus
    psp: str
    key: str
    sha256: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


@dataclass
class Survey:
    sha256: str
    rows: int
    earliest: datetime | None  # of the charges
    latest: datetime | None
    etag: str = ""
    # Of the charges and the transfers: both are dated by our own calls to the PSP.
    activity: tuple[datetime, datetime] | None = None


class _Hashing:
    """A binary stream that hashes what is read through it."""

    def __init__(self, source: Any):
        self._source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()


def _get(obj: SettlementObject, etag: str = "") -> dict[str, Any]:
    """The object; with an ETag, only that version of it (a key overwritten between the passes fails)."""
    extra = {"IfMatch": etag} if etag else {}
    return aws.client("s3").get_object(Bucket=obj.bucket, Key=obj.key, **extra)


def survey(obj: SettlementObject, etag: str = "") -> Survey:
    """Hash the bytes and parse every row once, without effects. Raises UnparseableFile."""
    answer = _get(obj, etag)
    stream = _Hashing(answer["Body"])
    rows = 0
    earliest = latest = None
    transfers: list[datetime] = []
    with batch_collection():
        for item in parsers.stream(obj.psp, stream):
            # The window is drawn by the charges: payouts and fees are dated by the PSP's own schedule.
            if type(item) is ChargeBlock:
                rows += len(item)
                moments = [row.occurred_at for row in item.others if type(row) is SettlementRow
                           and row.kind is RowKind.CHARGE and row.occurred_at is not None]
                transfers += [row.occurred_at for row in item.others if type(row) is SettlementRow
                              and row.kind is RowKind.TRANSFER and row.occurred_at is not None]
                if item.span:
                    moments += [datetime.fromtimestamp(second, UTC) for second in item.span]
            else:
                rows += 1
                moments = [item.occurred_at] if type(item) is SettlementRow and item.kind is RowKind.CHARGE \
                    and item.occurred_at is not None else []
                if not moments and type(item) is SettlementRow and item.kind is RowKind.TRANSFER \
                        and item.occurred_at is not None:
                    transfers.append(item.occurred_at)
            for moment in moments:
                earliest = moment if earliest is None or moment < earliest else earliest
                latest = moment if latest is None or moment > latest else latest
            if len(transfers) > 2:
                transfers = [min(transfers), max(transfers)]
    every = [*transfers, *(moment for moment in (earliest, latest) if moment is not None)]
    activity = (min(every), max(every)) if every else None
    return Survey(stream.drain(), rows, earliest, latest, answer.get("ETag", ""), activity)


def quarantine(obj: SettlementObject, reason: str) -> None:
    """Copy the file under quarantine/, write its error report next to it, then delete the incoming object.
    Each step can be repeated; the delete comes last, so a crash before it leaves the file to be retried."""
    s3 = aws.client("s3")
    target = f"quarantine/{obj.psp}/{obj.name}"
    s3.copy_object(Bucket=obj.bucket, Key=target, CopySource={"Bucket": obj.bucket, "Key": obj.key})
    report = {"source_key": obj.key, "quarantined_key": target, "error": reason, "quarantined_at": clock.iso()}
    s3.put_object(Bucket=obj.bucket, Key=f"{target}.error.json", Body=json.dumps(report, indent=1).encode(),
                  ContentType="application/json")
    s3.delete_object(Bucket=obj.bucket, Key=obj.key)


def html_key(json_key: str) -> str:
    return json_key.removesuffix(".json") + ".html"


def report_keys(obj: SettlementObject) -> tuple[str, str]:
    return f"reports/{obj.psp}/{obj.name}.json", f"reports/{obj.psp}/{obj.name}.csv"


def reconcile(obj: SettlementObject, *, config: Settings | None = None, recon: ReconSettings | None = None,
              now: datetime | None = None) -> RunResult:
    config = check_shared(config or settings())
    recon = recon or recon_settings()
    now = now or clock.now()
    result = RunResult(RunStatus.PROCESSED, obj.psp, obj.key)
    try:
        found = survey(obj, screen(obj.bucket, obj.key, obj.size, recon.max_file_bytes))
    except UnparseableFile as error:
        quarantine(obj, str(error))
        return RunResult(RunStatus.QUARANTINED, obj.psp, obj.key, detail=str(error))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            # Quarantined (or removed) by an earlier attempt of this same message: nothing left to do.
            return RunResult(RunStatus.GONE, obj.psp, obj.key)
        raise
    result.sha256 = found.sha256
    table = ReconTable.from_settings(config)
    claim = table.claim_file(found.sha256, obj.psp, obj.key, obj.delivery, clock.iso(now))
    if claim.outcome is ClaimOutcome.DONE:
        result.status = RunStatus.ALREADY_DONE
        return result
    if claim.outcome is ClaimOutcome.DUPLICATE:
        original = (claim.original or {}).get("source_key", "?")
        table.record_duplicate(found.sha256, obj.key, obj.delivery, original, clock.iso(now))
        body = {"source_key": obj.key, "sha256": found.sha256, "duplicate_of": original,
                "detected_at": clock.iso(now),
                "explanation": f"same content as {original}: not reconciled again, nothing changed"}
        aws.client("s3").put_object(Bucket=obj.bucket, Key=f"reports/{obj.psp}/{obj.name}.duplicate.json",
                                    Body=json.dumps(body, indent=1).encode(), ContentType="application/json")
        result.status, result.detail = RunStatus.DUPLICATE, original
        return result
    result.summary = _match(obj, found, config, recon, table, now)
    table.finish_run(found.sha256, result.summary, clock.iso())
    return result


def _match(obj: SettlementObject, found: Survey, config: Settings, recon: ReconSettings, table: ReconTable,
           now: datetime) -> dict[str, Any]:
    margin = timedelta(minutes=recon.cutoff_minutes)
    window = Window.of_file(found.earliest, found.latest, margin)
    transfers = Window.of_file(*found.activity, margin) \
        if found.activity and obj.psp in parsers.CARRIES_TRANSFERS else None
    header = {"psp": obj.psp, "source_key": obj.key, "file_name": obj.name, "sha256": found.sha256,
              "run_at": clock.iso(now),
              "window": dict(zip(("start", "end"), window.bounds(), strict=True)) if window else None,
              "transfer_window": dict(zip(("start", "end"), transfers.bounds(), strict=True)) if transfers else None}
    with ReportBuilder(header) as report:
        if obj.psp == OFFLINE_PSP:  # the bank's deposits of checks and money orders (issue 17)
            return _match_deposits(report, obj, found, config)
        return _match_into(report, obj, found, (window, transfers), config, recon, table, now)


def _reviewed(report: ReportBuilder, obj: SettlementObject, found: Survey, config: Settings
              ) -> tuple[ReviewQueue, Callable[[Outcome], None]]:
    """The file's review queue, and `emit`: each outcome into the report, and to review when it needs a person."""
    review = ReviewQueue(config.review_queue_url, {"psp": obj.psp, "source_key": obj.key,
                                                    "file_sha256": found.sha256})

    def emit(outcome: Outcome) -> None:
        report.add(outcome)
        if outcome.review:
            review.add(outcome)

    return review, emit


def _match_deposits(report: ReportBuilder, obj: SettlementObject, found: Survey, config: Settings
                    ) -> dict[str, Any]:
    review, emit = _reviewed(report, obj, found, config)

    day = bank.file_day(obj.name, found.latest)
    report.header["deposit_day"] = day
    bank.match_deposits(parsers.stream(obj.psp, _get(obj, found.etag)["Body"]), day,
                        PaymentTables.from_settings(config), emit)
    review.flush()
    return _uploaded(report, obj, found, {"review_messages": review.sent, "deposit_day": day})


def _match_into(report: ReportBuilder, obj: SettlementObject, found: Survey,
                windows: tuple[Window | None, Window | None], config: Settings, recon: ReconSettings,
                table: ReconTable, now: datetime) -> dict[str, Any]:
    review, emit = _reviewed(report, obj, found, config)

    with ThreadPoolExecutor(recon.read_workers, "recon-read") as reads, \
            ThreadPoolExecutor(recon.write_workers, "recon-write") as writes:
        payments, ledger = PaymentTables.from_settings(config), LedgerTable.from_settings(config)
        fixes = AwsFixes(obj.psp, writes, ledger, payments)
        matcher = Matcher(
            Policy(obj.psp, UNRECORDED_PSP, timedelta(days=recon.missing_after_days), recon.batch_size,
                   charged_per_checkout=obj.psp in parsers.CHARGED_PER_CHECKOUT,
                   undoings_name_their_charge=obj.psp in parsers.UNDOINGS_NAME_THEIR_CHARGE),
            DynamoLookup(payments, ledger, reads, PayoutsTable.from_settings(config)),
            fixes, CarryStore(table, obj.psp), emit, window=windows[0], now=now, transfer_window=windows[1],
        )
        # The same bytes as the survey read (IfMatch): no error here can be the file's; SQS retries the run.
        matcher.feed_all(parsers.stream(obj.psp, _get(obj, found.etag)["Body"]))
        matcher.finish()
    review.flush()
    return _uploaded(report, obj, found, {
        "review_messages": review.sent, "workflows_restarted": fixes.restarted, "fees_recorded": fixes.fees_recorded,
        "carries_cleared": matcher.carry_counts.cleared, "still_carried": matcher.carry_counts.still_carried,
        "carries_raised": matcher.carry_counts.raised,
    })


def _uploaded(report: ReportBuilder, obj: SettlementObject, found: Survey, extra: dict[str, Any]) -> dict[str, Any]:
    """The report written (JSON, CSV, HTML) and its summary."""
    json_key, csv_key = report_keys(obj)
    upload(obj.bucket, json_key, report.write_json, "application/json")
    upload(obj.bucket, csv_key, report.write_csv, "text/csv")
    upload(obj.bucket, html_key(json_key), report.write_html, "text/html; charset=utf-8")
    summary = report.summary()
    summary.update({"rows_in_file": found.rows, "report_json": json_key, "report_csv": csv_key,
                    "report_html": html_key(json_key), **extra})
    return summary
