"""The storefront demo (`make demo`): checkouts through the API, then what the system made of them.

`python -m verification.demo --orders 100` uses a running `make run` (API :3000, AWS :5000, PSP sandbox :12111)
when all three answer, or starts its own local stack on free ports. It registers the sellers (each with a
connected account created at the sandbox and a commission), places the checkouts (several buyers, 1-5 sellers
each, in USD, EUR and JPY, most paid with a single-use PaymentMethod created as Stripe.js creates it, some
declined), waits for every order to be final, confirms the delivery of most SUCCESS orders (releases) and waits
for their transfers, and prints orders by status, pay-outs by status, seller balances, one seller's statement,
ledger totals per account, the invariants of architecture.md checked from the outside, and a reconciliation of the
sandbox's own settlement file. Exit status 1 when an invariant fails, 2 when the demo could
not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import boto3
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from functions.auth.keys import issue as issue_key
from functions.shared.money import Money
from functions.shared.names import DEFAULT_CLIENT_ID, incoming_key, report_key
from functions.shared.tables import ApiKeysTable
from verification.driver import RunRecord, place_all, watch_until_settled
from verification.invariants import Result, Snapshot, check, collect, scan
from verification.payouts import Connect, SellerPlan, release_all, watch_payouts
from verification.storefront import ApiClient, PaymentMethods, Workload, make_checkouts

STACK_NAME = "MarketPay"
REGION = "us-east-1"
DEFAULT_API, DEFAULT_AWS, DEFAULT_PSP = "http://127.0.0.1:3000", "http://127.0.0.1:5000", "http://127.0.0.1:12111"
BALANCE_REPORT = "balance_change_from_activity.itemized.3"
DUMMY_AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION}


@dataclass
class Endpoints:
    api: str
    aws: str
    psp: str
    outputs: dict[str, str]
    api_key: str = ""

    def api_client(self) -> ApiClient:
        return ApiClient(self.api, self.api_key)

    def client(self, service: str) -> Any:
        """The `session` the driver and the invariant checker expect: `.client(name)` on the local endpoint."""
        return boto3.session.Session(region_name=REGION).client(service, endpoint_url=self.aws)


# --- finding or starting a stack -------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=0.5):
            return True
    except OSError:
        return False


def stack_outputs(aws_url: str) -> dict[str, str]:
    cfn = boto3.session.Session(region_name=REGION).client("cloudformation", endpoint_url=aws_url)
    stack = cfn.describe_stacks(StackName=STACK_NAME)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def running_stack(api: str, aws: str, psp: str, api_key: str | None = None) -> Endpoints | None:
    """The endpoints of a running `make run`, or None when one of its three parts does not answer."""
    if not all(_answers(url) for url in (api, aws, psp)):
        return None
    try:
        with urllib.request.urlopen(f"{psp}/_sandbox/health", timeout=2) as answer:
            if json.load(answer).get("ok") is not True:
                return None
        outputs = stack_outputs(aws)
    except Exception:  # noqa: BLE001 - anything else on those ports is not our stack
        return None
    return Endpoints(api, aws, psp, outputs, api_key or _demo_key(aws, outputs))


def _demo_key(aws: str, outputs: dict[str, str]) -> str:
    """A key of the default client for this run, made as an operator makes one (`python -m ops keys create`)."""
    os.environ["AWS_ENDPOINT_URL"] = aws
    return issue_key(ApiKeysTable(outputs["ApiKeysTableName"]), DEFAULT_CLIENT_ID)


def start_own_stack() -> Any:
    from local.moto_server import free_port
    from local.stack import LocalStack, Ports

    for noisy in ("local", "werkzeug", "moto", "psp_sandbox"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
                      extra_env={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_LOGGER_SAMPLE_RATE": "0",
                                 "POWERTOOLS_METRICS_DISABLED": "true"}).start()


def psp_charges(psp_url: str) -> list[dict[str, Any]]:
    """The sandbox's own record of every charge (ground truth for invariant 1), over HTTP."""
    with urllib.request.urlopen(f"{psp_url}/_sandbox/charges", timeout=30) as answer:
        return list(json.load(answer)["data"])


# --- the run ---------------------------------------------------------------------------------------------------


def place_and_settle(console: Console, env: Endpoints, checkouts: int, seed: int, prefix: str,
                     timeout_s: float) -> tuple[RunRecord, Workload, bool]:
    workload = make_checkouts(checkouts, seed=seed, decline_rate=0.15, prefix=prefix, sellers=6, buyers=12,
                              single_use_rate=0.9)
    register_sellers(console, env, workload, seed)
    total = len(workload.order_ids)
    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        placing = progress.add_task("checkouts placed", total=total)
        final = progress.add_task("orders final", total=total)
        record = place_all(env.api_client(), workload, seed=seed, threads=8,
                           on_progress=lambda n: progress.advance(placing, n), payment_methods=PaymentMethods(env.psp))
        settled = True
        try:
            watch_until_settled(env, env.outputs, record.accepted_order_ids, record, timeout_s=timeout_s,
                                interval_s=0.3, on_tick=lambda done, _: progress.update(final, completed=done))
        except TimeoutError as error:
            console.print(f"[red]{error}[/red]")
            settled = False
    return record, workload, settled


def seller_names(workload: Workload) -> list[str]:
    return sorted({o["seller_account"] for c in workload.checkouts for o in c["payment_orders"]})


def register_sellers(console: Console, env: Endpoints, workload: Workload, seed: int) -> None:
    """Every seller of the demo onboarded: a connected account at the sandbox (kept from an earlier run against
    the same `make run`), a commission (0-12.5%)."""
    sellers = seller_names(workload)
    plan = SellerPlan.draw(sellers, seed, special=False)
    plan.register(env.api_client(), Connect(env.psp), keep_accounts=True)
    console.print(f"{len(sellers)} sellers registered, each with a connected account: "
                  + ", ".join(f"{s} {plan.accounts[s]} ({plan.commission_bps[s] / 100:g}%)" for s in sellers))


def release_and_transfer(console: Console, env: Endpoints, own_ids: list[str], seed: int,
                         timeout_s: float) -> tuple[list[str], dict[str, list[str]]]:
    """The storefront confirms the delivery of 80% of the demo's SUCCESS orders; then every released order is
    transferred to its seller. Returns the released ids and the pay-out statuses seen."""
    table = env.outputs["PayoutsTableName"]
    mine = set(own_ids)
    db = env.client("dynamodb")

    def read() -> list[dict[str, Any]]:
        return [p for p in scan(db, table) if p["payment_order_id"] in mine]

    held = sorted(p["payment_order_id"] for p in read() if p["payout_status"] == "HELD")
    confirmed = held[: max(1, len(held) * 4 // 5)] if held else []
    started = time.monotonic()
    releases = release_all(env.api_client(), confirmed, seed=seed, twice_rate=0.1)
    observed: dict[str, list[str]] = {}
    try:
        watch_payouts(read, observed, timeout_s=timeout_s, interval_s=0.3)
    except TimeoutError as error:
        console.print(f"[red]{error}[/red]")
    console.print(f"{len(releases.released)} deliveries confirmed ({releases.twice} of them twice at once), "
                  f"{len(held) - len(confirmed)} left held; pay-outs settled in {time.monotonic() - started:.1f} s")
    return releases.released, observed


def payout_table(payouts: list[dict[str, Any]], own: set[str]) -> Table:
    table = Table(title="Pay-outs by status (this demo)")
    for name, justify in (("status", "left"), ("orders", "right"), ("gross", "right"), ("commission", "right"),
                          ("net to sellers", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for payout in payouts:
        if payout["payment_order_id"] not in own:
            continue
        row = rows[(payout["payout_status"], payout["currency"])]
        row[0] += 1
        row[1] += int(payout["gross_minor"])
        row[2] += int(payout.get("commission_minor") or 0)
        row[3] += int(payout.get("net_minor") or 0)
    for (status, currency), (count, gross, commission, net) in sorted(rows.items()):
        table.add_row(status, str(count), *(Money(v, currency).to_major() + f" {currency}"
                                            for v in (gross, commission, net)))
    return table


def balances_table(api: ApiClient, sellers: list[str]) -> Table:
    """Each seller's balance as the API gives it (GET /v1/sellers/{seller}/balance)."""
    table = Table(title="Seller balances (GET /v1/sellers/{seller}/balance)")
    buckets = ("pending", "available", "transferred", "owed")
    for name in ("seller", "currency", *buckets):
        table.add_column(name, justify="left" if name in ("seller", "currency") else "right")
    for seller in sellers:
        status, body, _ = api.balance(seller)
        if status != 200:
            table.add_row(seller, f"[red]{status}[/red]", *([""] * len(buckets)))
            continue
        for currency, values in sorted(balances_of(body).items()):
            table.add_row(seller, currency, *(str(values.get(b, "")) for b in buckets))
    return table


def balances_of(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    """CUR -> bucket -> decimal string, from the balance answer."""
    balances = body.get("balances", body)
    if isinstance(balances, list):
        return {str(b["currency"]): b for b in balances}
    return {currency: values for currency, values in balances.items() if isinstance(values, dict)}


def statement_table(api: ApiClient, seller: str, start: str, end: str) -> Table:
    """The seller's statement (GET /v1/sellers/{seller}/statement?from=&to=) as the seller would read it."""
    status, body, _ = api.statement(seller, start, end)
    movements = body if status == 200 and isinstance(body, list) else []
    table = Table(title=f"Statement of {seller} ({len(movements)} movements)"
                  + ("" if status == 200 else f": HTTP {status} {body}"))
    columns = ("created_at", "kind", "payment_order_id", "currency", "gross", "commission", "net", "transfer_id")
    for name in columns:
        table.add_column(name, justify="right" if name in ("gross", "commission", "net") else "left")
    for movement in movements[:STATEMENT_ROWS]:
        table.add_row(*(str(movement.get(name) or "") for name in columns))
    if len(movements) > STATEMENT_ROWS:
        table.add_row("…", f"{len(movements) - STATEMENT_ROWS} more", *([""] * (len(columns) - 2)))
    return table


STATEMENT_ROWS = 30


def reconcile_settlement(console: Console, env: Endpoints, stamp: str, timeout_s: float) -> dict[str, Any] | None:
    """Stripe's balance report from the sandbox → `incoming/stripe/` → wait for the recon function's report."""
    with urllib.request.urlopen(f"{env.psp}/_sandbox/settlement?report={BALANCE_REPORT}", timeout=60) as answer:
        body = answer.read()
    bucket = env.outputs["SettlementBucketName"]
    name = f"demo-{stamp}.csv"
    s3 = env.client("s3")
    s3.put_object(Bucket=bucket, Key=incoming_key("stripe", name), Body=body, ContentType="text/csv")
    report = report_key("stripe", name, ".json")
    rows = len(body.splitlines()) - 1
    console.print(f"settlement file: s3://{bucket}/{incoming_key('stripe', name)} ({rows} rows)")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return json.loads(s3.get_object(Bucket=bucket, Key=report)["Body"].read())
        except s3.exceptions.NoSuchKey:
            time.sleep(0.5)
    console.print(f"[red]no report at s3://{bucket}/{report} within {timeout_s} s[/red]")
    return None


# --- the tables ------------------------------------------------------------------------------------------------


def status_table(orders: list[dict[str, Any]], own: set[str]) -> Table:
    table = Table(title="Payment orders by status")
    table.add_column("status")
    table.add_column("failure code")
    table.add_column("this demo", justify="right")
    table.add_column("all orders", justify="right")
    mine: Counter[tuple[str, str]] = Counter()
    everyone: Counter[tuple[str, str]] = Counter()
    for order in orders:
        key = (order["payment_order_status"], order.get("failure_code") or "")
        everyone[key] += 1
        if order["payment_order_id"] in own:
            mine[key] += 1
    for status, code in sorted(everyone):
        table.add_row(status, code, str(mine[(status, code)]), str(everyone[(status, code)]))
    table.add_row("total", "", str(sum(mine.values())), str(len(orders)), style="bold")
    return table


def ledger_totals(ledger: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for tx in ledger:
        for entry in tx["entries"]:
            totals[(entry["account"], entry["currency"])] += int(entry["amount_minor"])
    return totals


def ledger_table(ledger: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Ledger totals per account ({len(ledger)} transactions)")
    table.add_column("account")
    table.add_column("currency")
    table.add_column("sum", justify="right")
    totals = ledger_totals(ledger)
    for (account, currency), minor in sorted(totals.items()):
        table.add_row(account, currency, Money(minor, currency).to_major())
    per_currency: dict[str, int] = defaultdict(int)
    for (_, currency), minor in totals.items():
        per_currency[currency] += minor
    for currency, minor in sorted(per_currency.items()):
        style = "bold green" if minor == 0 else "bold red"
        table.add_row("all accounts", currency, Money(minor, currency).to_major(), style=style)
    return table


def invariants_table(results: list[Result]) -> Table:
    table = Table(title="Invariants (architecture.md), checked from the outside")
    table.add_column("#", justify="right")
    table.add_column("invariant")
    table.add_column("result")
    for result in results:
        shown = "; ".join(result.violations[:3]) + (" …" if len(result.violations) > 3 else "")
        table.add_row(str(result.number), result.name,
                      "[green]ok[/green]" if result.ok else f"[red]VIOLATED ({len(result.violations)})[/red] {shown}")
    return table


def recon_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"Reconciliation of {report.get('file_name', '?')}: {report.get('total', 0)} rows")
    table.add_column("category")
    table.add_column("rows", justify="right")
    table.add_column("amounts")
    for category, values in report["categories"].items():
        amounts = ", ".join(f"{amount} {currency}" for currency, amount in values["amounts"].items())
        table.add_row(category, str(values["count"]), amounts)
    table.add_row("unexplained", str(report["unexplained"]), "", style="bold")
    table.add_row("fixed automatically", str(report["fixed"]), "", style="bold")
    return table


def unexplained_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in report.get("discrepancies", []) if d.get("unexplained")]


# --- main ------------------------------------------------------------------------------------------------------


def snapshot_of(env: Endpoints, record: RunRecord | None = None, card_succeeds: dict[str, bool] | None = None,
                released: list[str] | None = None, observed_payouts: dict[str, list[str]] | None = None
                ) -> Snapshot:
    connect = Connect(env.psp)
    extra: dict[str, Any] = {"card_succeeds": card_succeeds or {}, "released_order_ids": released or [],
                             "observed_payout_statuses": observed_payouts or {},
                             "psp_transfers": connect.transfers(), "psp_account_balances": connect.account_balances()}
    if record is not None:
        extra |= {"observed_statuses": record.observed_statuses, "replays": record.replays,
                  "unreadable_after_write": record.unreadable_after_write}
    # accepted_order_ids left empty: invariant 2 then covers every order in the table, not only this demo's.
    return collect(env, env.outputs, psp_charges(env.psp), **extra)


def run(console: Console, env: Endpoints, checkouts: int, seed: int, timeout_s: float) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    prefix = f"demo{stamp}"
    started = time.monotonic()
    statement_from = datetime.now(UTC).isoformat(timespec="seconds")
    record, workload, _ = place_and_settle(console, env, checkouts, seed, prefix, timeout_s)
    own_ids = workload.order_ids
    elapsed = time.monotonic() - started
    console.print(f"{checkouts} checkouts, {len(workload.charges)} charges (one per checkout and currency), "
                  f"{len(own_ids)} orders ({len(record.accepted_order_ids)} accepted, {len(record.rejected)} "
                  f"rejected) final in {elapsed:.1f} s; {len(record.payment_methods)} single-use PaymentMethods; "
                  f"{len(record.replays)} replays and conflicting replays sent along")
    released, observed = release_and_transfer(console, env, own_ids, seed, timeout_s)

    snap = snapshot_of(env, record, workload.card_succeeds, released, observed)
    results = check(snap)
    console.print(status_table(snap.orders, set(own_ids)))
    console.print(payout_table(snap.payouts, set(own_ids)))
    api = env.api_client()
    sellers = seller_names(workload)
    console.print(balances_table(api, sellers))
    busiest = Counter(p["seller_account"] for p in snap.payouts
                      if p["payment_order_id"] in set(released)).most_common(1)
    if busiest:
        statement_to = (datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds")
        console.print(statement_table(api, busiest[0][0], statement_from, statement_to))
    console.print(ledger_table(snap.ledger))

    report = reconcile_settlement(console, env, stamp, timeout_s=60)
    unexplained: list[dict[str, Any]] = []
    if report is not None:
        console.print(recon_table(report))
        unexplained = unexplained_of(report)
        for item in unexplained[:20]:
            console.print(f"  [red]unexplained[/red] {item.get('category')} {item.get('payment_order_id')} "
                          f"{item.get('psp_reference')}: {item.get('explanation')}")
        if report.get("fees_recorded") or report["categories"].get("missing_in_ledger", {}).get("count"):
            console.print("  (fee rows become ledger fee transactions: expected)")
        # The fees recon recorded are ledger transactions too: the books must still balance after it.
        after = {r.number: r for r in check(snapshot_of(env))}
        results = [after[r.number] if r.number in (3, 4) else r for r in results]
    recon_violations = ["no reconciliation report"] if report is None else [
        f"{report['unexplained']} unexplained difference(s)"] if report["unexplained"] else []
    results.append(Result(8, "reconciliation against the PSP's records: nothing unexplained", recon_violations))
    console.print(invariants_table(results))
    failed = [r.number for r in results if not r.ok]
    if failed:
        console.print(f"[bold red]invariants violated: {failed}[/bold red]")
        return 1
    console.print("[bold green]every invariant holds[/bold green]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verification.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100, help="number of checkouts (1-5 orders each)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every order to be final")
    parser.add_argument("--api", default=DEFAULT_API)
    parser.add_argument("--aws", default=DEFAULT_AWS)
    parser.add_argument("--psp", default=DEFAULT_PSP)
    parser.add_argument("--own-stack", action="store_true", help="always start an own stack on free ports")
    parser.add_argument("--api-key", default=os.environ.get("MARKETPAY_API_KEY"),
                        help="the key of `make run`'s READY line (or env MARKETPAY_API_KEY); default: a new key of "
                             "the default client, made as an operator makes one")
    args = parser.parse_args(argv)
    for key, value in DUMMY_AWS_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING)
    console = Console()

    env = None if args.own_stack else running_stack(args.api, args.aws, args.psp, args.api_key)
    own = None
    if env is None:
        console.print("no running `make run` found: starting a local stack on free ports…")
        try:
            own = start_own_stack()
        except Exception as error:  # noqa: BLE001 - say why and stop
            console.print(f"[red]could not start a local stack: {error}[/red]")
            return 2
        env = Endpoints(own.api_url, own.aws_url, own.psp_url or "", own.outputs, own.api_key or "")
    console.print(f"api={env.api} aws={env.aws} psp={env.psp}" + (" (own stack)" if own else " (make run)"))
    try:
        return run(console, env, args.orders, args.seed, args.timeout)
    finally:
        if own is not None:
            own.stop()


if __name__ == "__main__":
    from local.lifecycle import run_stoppable

    sys.exit(run_stoppable(main))
