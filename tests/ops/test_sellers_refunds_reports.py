"""`python -m ops sellers balance|statement`, `refunds show`, `recon reports` and `recon report show` on moto: the
API's own views (the same numbers as GET /v1/sellers/{seller}/balance, /statement and /v1/refunds/{id}) and the
reports the recon functions wrote to the settlement bucket."""

import json
import re
from datetime import timedelta

from functions.payment import payouts
from functions.payment import refunds as refunds_api
from functions.payment.schemas import RefundRequest
from functions.recon.outcomes import Category, Outcome
from functions.recon.report import ReportBuilder, upload
from functions.recon.service import html_key
from functions.shared import aws, clock
from functions.shared.config import settings
from functions.shared.money import Money
from functions.shared.tables import RefundsTable
from ops.reports import SUMMARY_BYTES
from tests.integration.support import paid
from tests.ops.support import cli
from tests.support.aws import drain


def stdout_json(result):
    """A --json answer is stdout alone (where the tool points goes to stderr)."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- sellers -----------------------------------------------------------------------------------------------


def test_sellers_balance_prints_the_apis_numbers_per_currency(system):
    paid("chk_1")  # seller_a 12.34 USD, seller_b 5.00 USD: credited pending

    result = cli("sellers", "balance", "seller_a")

    assert result.exit_code == 0, result.output
    assert re.search(r"│ USD\s+│\s+12\.34 │\s+0\.00 │\s+0\.00 │\s+0\.00 │", result.output), result.output
    answer = stdout_json(cli("sellers", "balance", "seller_a", "--json"))
    assert answer == payouts.balance("seller_a").model_dump()
    assert answer["balances"]["USD"]["pending"] == "12.34"
    assert stdout_json(cli("sellers", "balance", "seller_a", "--currency", "eur", "--json"))["balances"] == {}


def test_sellers_balance_of_an_unknown_seller_is_the_apis_404(system):
    result = cli("sellers", "balance", "seller_nobody")
    assert result.exit_code == 1 and "error: seller_not_found: seller seller_nobody not found" in result.output


def test_sellers_statement_prints_the_apis_lines_json_and_csv(system):
    paid("chk_1")
    start, end = clock.iso(clock.now() - timedelta(hours=1)), clock.iso(clock.now() + timedelta(hours=1))
    lines = payouts.statement("seller_a", start, end)
    assert len(lines) == 1

    table = cli("sellers", "statement", "seller_a", "--from", start, "--to", end)
    as_json = cli("sellers", "statement", "seller_a", "--from", start, "--to", end, "--json")
    as_csv = cli("sellers", "statement", "seller_a", "--from", start, "--to", end, "--csv")

    assert table.exit_code == 0, table.output
    assert re.search(r"│ payin\s+│ chk_1_0\s+│ USD .*│\s+12\.34 │", table.output), table.output
    assert "1 movement(s)" in table.output
    assert stdout_json(as_json) == [line.model_dump() for line in lines]
    assert as_csv.exit_code == 0 and as_csv.stdout == payouts.statement_csv(lines)


def test_sellers_statement_refuses_a_reversed_window_as_the_api_does(system):
    paid("chk_1")
    result = cli("sellers", "statement", "seller_a", "--from", "2026-12-02T00:00:00Z", "--to", "2026-12-01T00:00:00Z")
    assert result.exit_code == 1 and "error: invalid_time_window: from must be before to" in result.output


# -- refunds -----------------------------------------------------------------------------------------------


def test_refunds_show_prints_the_refund_its_failure_and_its_order(system):
    paid("chk_1")
    refunds_api.create_refund("chk_1_0", RefundRequest.model_validate(
        {"refund_id": "rf_1", "amount": "2.00", "reason": "damaged"}))
    drain(settings().refunds_queue_url)
    table = RefundsTable.from_settings()
    pending = cli("refunds", "show", "rf_1")
    assert pending.exit_code == 0, pending.output
    assert re.search(r"│ status\s+PENDING", pending.output) and re.search(r"│ refunded\s+2\.00 USD", pending.output)
    assert table.fail(table.get("rf_1"), "expired_or_canceled_card", "the card was cancelled", clock.iso())

    result = cli("refunds", "show", "rf_1")

    assert result.exit_code == 0, result.output
    output = result.output
    assert re.search(r"│ status\s+FAILED", output) and re.search(r"│ amount\s+2\.00 USD", output)
    assert re.search(r"│ failure_code\s+expired_or_canceled_card", output)
    assert re.search(r"│ failure_reason\s+the card was cancelled", output)
    assert "order chk_1_0" in output and re.search(r"│ status\s+SUCCESS", output)
    assert re.search(r"│ refunded\s+0\.00 USD", output)  # the failed refund gave its reservation back
    answer = stdout_json(cli("refunds", "show", "rf_1", "--json"))
    assert {k: v for k, v in answer.items() if k != "order"} == refunds_api.get_refund("rf_1").model_dump()
    assert answer["order"]["refunded"] == "0.00 USD" and answer["order"]["status"] == "SUCCESS"


def test_refunds_show_of_an_unknown_refund_is_the_apis_404(system):
    result = cli("refunds", "show", "rf_missing")
    assert result.exit_code == 1 and "error: refund_not_found: refund rf_missing not found" in result.output


# -- recon reports -----------------------------------------------------------------------------------------


def settlement_report(name="stripe_2026-12-05.csv"):
    """A settlement report written the way the recon function writes one (ReportBuilder, upload, html_key)."""
    bucket = settings().settlement_bucket
    json_key = f"reports/stripe/{name}.json"
    with ReportBuilder({"psp": "stripe", "file_name": name, "run_at": clock.iso()}) as report:
        report.add(Outcome(Category.MATCHED, ours=Money(1234, "USD"), theirs=Money(1234, "USD"), count=3))
        report.add(Outcome(Category.AMOUNT_MISMATCH, payment_order_id="chk_9_0", ours=Money(500, "USD"),
                           theirs=Money(450, "USD"), explanation="amounts differ", review=True))
        upload(bucket, json_key, report.write_json, "application/json")
        upload(bucket, f"reports/stripe/{name}.csv", report.write_csv, "text/csv")
        upload(bucket, html_key(json_key), report.write_html, "text/html; charset=utf-8")
    return json_key


def test_recon_reports_lists_settlement_and_internal_reports_with_their_totals(system):
    paid("chk_1", wallet=["chk_1_0"])  # one finding for the internal report, fixed
    assert cli("recon", "internal", "--settle-s", "0").exit_code == 0  # the order was broken just now
    stripe_key = settlement_report()

    result = cli("recon", "reports")

    assert result.exit_code == 0, result.output
    output = result.output
    assert re.search(rf"{re.escape(stripe_key)}\s+│ stripe .*│\s+4 │\s+0 │\s+1 │ matched 3 \(12\.34 USD\); "
                     r"amount_mismatch 1 \(4\.50 USD\)", output), output
    assert re.search(r"reports/internal/\S+\.json\s+│ internal .*│\s+1 │\s+1 │\s+0 │ "
                     r"order_success_without_wallet_credit 1 \(12\.34 USD\)", output), output
    listed = stdout_json(cli("recon", "reports", "--json"))
    assert sorted(r["source"] for r in listed) == ["internal", "stripe"]
    only_stripe = stdout_json(cli("recon", "reports", "--psp", "stripe", "--json"))
    assert [r["key"] for r in only_stripe] == [stripe_key]
    assert only_stripe[0]["html_key"] == "reports/stripe/stripe_2026-12-05.csv.html"
    today = clock.now().strftime("%Y-%m-%d")
    assert len(stdout_json(cli("recon", "reports", "--date", today, "--json"))) == 2
    assert stdout_json(cli("recon", "reports", "--date", "2001-01-01", "--json")) == []
    bad = cli("recon", "reports", "--date", "yesterday")
    assert bad.exit_code == 1 and "use YYYY-MM-DD" in bad.output


def test_recon_report_show_prints_the_summary_and_the_html_page(system):
    key = settlement_report()
    bucket = settings().settlement_bucket

    result = cli("recon", "report", "show", key)

    assert result.exit_code == 0, result.output
    output = result.output
    assert re.search(r"│ psp\s+stripe", output) and re.search(r"│ unexplained\s+1", output)
    assert re.search(r"amount_mismatch\s+│\s+1 │ 4\.50 USD", output)
    assert f"HTML page: s3://{bucket}/reports/stripe/stripe_2026-12-05.csv.html" in output
    assert "discrepancies" not in output  # the summary, not the list
    by_html = stdout_json(cli("recon", "report", "show", "reports/stripe/stripe_2026-12-05.csv.html", "--json"))
    assert by_html["key"] == key and by_html["summary"]["total"] == 4
    missing = cli("recon", "report", "show", "reports/stripe/nothing.json")
    assert missing.exit_code == 1 and "no report reports/stripe/nothing.json" in missing.output


def test_a_report_with_many_discrepancies_is_summarised_from_its_head_not_downloaded(system):
    bucket = settings().settlement_bucket
    name = "stripe_big.csv"
    json_key = f"reports/stripe/{name}.json"
    with ReportBuilder({"psp": "stripe", "file_name": name, "run_at": clock.iso()}) as report:
        for n in range(1500):
            report.add(Outcome(Category.MISSING_IN_LEDGER, payment_order_id=f"chk_{n}_0", psp_reference=f"pi_{n}",
                               theirs=Money(100, "USD"), explanation="no such order in our books", review=True))
        upload(bucket, json_key, report.write_json, "application/json")
    s3 = aws.client("s3")  # the client the tool uses (one per process)
    assert s3.head_object(Bucket=bucket, Key=json_key)["ContentLength"] > 4 * SUMMARY_BYTES
    read: list[int] = []

    def note(parsed, **_):
        read.append(parsed["ContentLength"])

    s3.meta.events.register("after-call.s3.GetObject", note)
    try:
        [listed] = stdout_json(cli("recon", "reports", "--json"))
    finally:
        s3.meta.events.unregister("after-call.s3.GetObject", note)

    assert listed["total"] == 1500 and listed["unexplained"] == 1500
    assert listed["categories"] == {"missing_in_ledger": {"count": 1500, "amounts": {"USD": "1500.00"}}}
    assert read == [SUMMARY_BYTES]  # the head of the object only
