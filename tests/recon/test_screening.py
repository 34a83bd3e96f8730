"""Refused before parsing: a file larger than a run reads (by the notification's size or HeadObject's) and a
compressed file (by its first bytes: never decompressed). Quarantined, nothing reconciled, the body unread."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from typing import Any

import pytest

from functions.recon import handler
from functions.recon.config import reload_recon_settings
from functions.recon.screening import HEAD_BYTES
from functions.shared import aws
from tests.recon.conftest import FIXTURES, Account, LambdaContext
from tests.recon.test_formats import plant_stripe
from tests.recon.test_intake import STRIPE, effects, sqs_event

KEY = "incoming/stripe/today.csv"


@pytest.fixture
def s3_calls(account: Account) -> list[tuple[str, dict[str, Any]]]:
    """Every S3 call the function makes from here on: (operation, parameters)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    aws.client("s3").meta.events.register(
        "provide-client-params.s3.*", lambda params, model, **_: calls.append((model.name, dict(params))))
    return calls


def deliver_claiming_size(account: Account, size: int) -> dict[str, Any]:
    """Deliver the queued S3 notification with its object size replaced by `size`."""
    [message] = aws.client("sqs").receive_message(QueueUrl=account.recon_queue_url)["Messages"]
    notification = json.loads(message["Body"])
    notification["Records"][0]["s3"]["object"]["size"] = size
    return handler.handler(sqs_event(json.dumps(notification)), LambdaContext())


def reads(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [params for operation, params in calls if operation == "GetObject" and params["Key"] == KEY]


def assert_quarantined_and_nothing_reconciled(account: Account, error: str, capsys: Any,
                                              before: tuple[int, int, set[str]]) -> None:
    assert account.keys("incoming/") == []
    assert account.keys("quarantine/stripe/") == ["quarantine/stripe/today.csv",
                                                 "quarantine/stripe/today.csv.error.json"]
    assert error in account.report("quarantine/stripe/today.csv.error.json")["error"]
    assert account.keys("reports/") == []
    assert effects(account) == before
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("QuarantinedFiles") == [1.0] for m in metrics)


def test_a_file_the_notification_says_is_too_large_is_quarantined_without_a_read(
        account: Account, s3_calls: list, capsys: pytest.CaptureFixture[str]) -> None:
    plant_stripe(account)
    before = effects(account)
    account.drop(KEY, (FIXTURES / STRIPE).read_bytes())

    answer = deliver_claiming_size(account, 600 * 1024 * 1024)

    assert answer["batchItemFailures"] == []
    assert_quarantined_and_nothing_reconciled(account, "(S3 notification), more than the 536870912", capsys, before)
    assert reads(s3_calls) == []
    assert "HeadObject" not in [operation for operation, _ in s3_calls]


def test_a_file_larger_than_its_notification_says_is_caught_by_head_object(
        account: Account, s3_calls: list, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = (FIXTURES / STRIPE).read_bytes()
    monkeypatch.setenv("RECON_MAX_FILE_BYTES", str(len(body) - 1))
    reload_recon_settings()
    plant_stripe(account)
    before = effects(account)
    account.drop(KEY, body)

    deliver_claiming_size(account, 10)

    assert_quarantined_and_nothing_reconciled(account, f"{len(body)} bytes (HeadObject)", capsys, before)
    assert reads(s3_calls) == []


def zip_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


# 64 MiB of the same CSV line, a few hundred KB compressed: read, it would expand 100-fold and more.
BOMB = b"charge,txn_1,2026-11-24 12:00:00,1.00,usd,pi_1,co_1\n" * (64 * 1024 * 1024 // 52)


@pytest.mark.parametrize(("body", "kind"), [(gzip.compress(BOMB, 9), "gzip"), (zip_of("today.csv", BOMB), "zip")],
                         ids=["gzip", "zip"])
def test_a_compressed_file_is_quarantined_after_reading_only_its_first_bytes(
        account: Account, s3_calls: list, capsys: pytest.CaptureFixture[str], body: bytes, kind: str) -> None:
    plant_stripe(account)
    before = effects(account)
    account.drop(KEY, body)  # named .csv: the bytes decide, not the key
    assert len(body) * 100 < len(BOMB)

    answer = account.deliver()

    assert answer["batchItemFailures"] == []
    assert_quarantined_and_nothing_reconciled(account, f"a {kind} file", capsys, before)
    [head] = reads(s3_calls)
    assert head["Range"] == f"bytes=0-{HEAD_BYTES - 1}"


def test_a_plain_file_within_the_limit_is_still_reconciled(account: Account, s3_calls: list) -> None:
    plant_stripe(account)
    account.drop(KEY, (FIXTURES / STRIPE).read_bytes())

    account.deliver()

    assert "reports/stripe/today.csv.json" in account.keys("reports/")
    etags = {params.get("IfMatch") for params in reads(s3_calls)}
    assert len(etags) == 1 and None not in etags  # every read is of the version HeadObject sized
