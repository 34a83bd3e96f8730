"""`python -m ops`: look at dead-letter queues and payment orders, and redrive them. Runbook: ops/README.md."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console, Group
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from functions.shared import aws, clock
from functions.shared.money import Money, MoneyError
from functions.shared.names import MONEY_CYCLE_KINDS, PAYIN, ledger_transaction_id, movement_key
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable, SellersTable
from infra import names
from ops.masking import mask, mask_text
from ops.messages import Message, Queue
from ops.orders import Action, load_order, redrive_order
from ops.payouts import PayoutView, load_payout, retry_payout
from ops.redrive import Result, redrive_queue
from ops.reports import list_reports, load_report
from ops.resources import DLQS, VALUES, Dlq, OpsError, Resources, describe_target, find_dlq

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
dlq_app = typer.Typer(no_args_is_help=True, help="Dead-letter queues: list, show, redrive.")
order_app = typer.Typer(no_args_is_help=True, help="One payment order or charge: show, redrive.")
payouts_app = typer.Typer(no_args_is_help=True, help="One order's payout to its seller: show, retry.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(order_app, name="order")
app.add_typer(payouts_app, name="payouts")
recon_app = typer.Typer(no_args_is_help=True,
                        help="Reconciliation: internal (orders, wallets, ledger, pay-outs), reports.")
app.add_typer(recon_app, name="recon")

_OVERRIDES = "Overrides (default: the stack's outputs)"
_ACTION_STYLE = {
    Action.MOVED: "green", Action.REQUEUED: "green", Action.STARTED: "green", Action.ALREADY_FINAL: "cyan",
    Action.SUPERSEDED: "cyan", Action.WATCHED: "yellow", Action.LEFT: "bold red",
}
_STATUS_STYLE = {"SUCCESS": "green", "FAILED": "red", "EXECUTING": "yellow", "NOT_STARTED": "yellow",
                 "TRANSFERRED": "green", "HELD": "yellow", "RELEASED": "yellow", "TRANSFERRING": "yellow"}


@dataclass
class Ops:
    resources: Resources
    console: Console


def _override(key: str) -> Any:
    return typer.Option(help=f"or env {VALUES[key].env}", rich_help_panel=_OVERRIDES, show_default=False)


@app.callback()
def main(
    ctx: typer.Context,
    stack: Annotated[str, typer.Option(envvar="MARKETPAY_STACK", help="CloudFormation stack to read")] = (
        names.STACK_NAME),
    orders_queue_url: Annotated[str | None, _override("orders_queue_url")] = None,
    orders_dlq_url: Annotated[str | None, _override("orders_dlq_url")] = None,
    workflow_dlq_url: Annotated[str | None, _override("workflow_dlq_url")] = None,
    recon_queue_url: Annotated[str | None, _override("recon_queue_url")] = None,
    recon_dlq_url: Annotated[str | None, _override("recon_dlq_url")] = None,
    review_queue_url: Annotated[str | None, _override("review_queue_url")] = None,
    review_dlq_url: Annotated[str | None, _override("review_dlq_url")] = None,
    payment_events_table: Annotated[str | None, _override("payment_events_table")] = None,
    payment_orders_table: Annotated[str | None, _override("payment_orders_table")] = None,
    payouts_table: Annotated[str | None, _override("payouts_table")] = None,
    sellers_table: Annotated[str | None, _override("sellers_table")] = None,
    payouts_queue_url: Annotated[str | None, _override("payouts_queue_url")] = None,
    payouts_dlq_url: Annotated[str | None, _override("payouts_dlq_url")] = None,
    wallet_table: Annotated[str | None, _override("wallet_table")] = None,
    ledger_table: Annotated[str | None, _override("ledger_table")] = None,
    state_machine_arn: Annotated[str | None, _override("state_machine_arn")] = None,
) -> None:
    """On-call tools for MarketPay. AWS_ENDPOINT_URL=http://127.0.0.1:5000 points them at `make run`."""
    overrides = {key: value for key, value in locals().items()
                 if key not in ("ctx", "stack") and isinstance(value, str) and value}
    console = Console(highlight=False)
    resources = Resources(stack, overrides)
    # Where the tool points goes to stderr: a `--json` answer on stdout stays one JSON document.
    where = Console(highlight=False, stderr=True)
    where.print(Text(describe_target(stack), style="dim"))
    if overrides or resources.from_environment():
        shown = ["--" + key.replace("_", "-") for key in overrides] + resources.from_environment()
        where.print(Text("not from the stack: " + ", ".join(shown), style="dim"))
    ctx.obj = Ops(resources, console)


def _ops(ctx: typer.Context) -> Ops:
    return ctx.find_object(Ops)


def _fail(console: Console, message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


def _guarded(ctx: typer.Context, body: Any) -> None:
    """Run a command body; known failures become one red line and exit code 1, not a traceback."""
    ops = _ops(ctx)
    try:
        body(ops)
    except OpsError as error:
        raise _fail(ops.console, str(error)) from error
    except ClientError as error:
        detail = error.response.get("Error", {})
        raise _fail(ops.console, f"AWS said {detail.get('Code')}: {detail.get('Message')}") from error
    except BotoCoreError as error:
        raise _fail(ops.console, f"cannot reach AWS: {error}") from error


# -- dlq ---------------------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(ctx: typer.Context) -> None:
    """Every dead-letter queue with its depth and its alarm."""

    def body(ops: Ops) -> None:
        queues = {dlq.name: Queue(ops.resources.get(dlq.url_value)) for dlq in DLQS}
        alarms = _alarm_states([queue.name for queue in queues.values()])
        table = Table(title="Dead-letter queues", title_justify="left")
        for column in ("queue", "name to type", "messages", "in flight", "alarm", "redrive sends to"):
            table.add_column(column, justify="right" if column in ("messages", "in flight") else "left")
        for dlq in DLQS:
            queue = queues[dlq.name]
            depth = queue.depth()
            alarm = alarms.get(queue.name) if alarms is not None else None
            table.add_row(
                dlq.name, dlq.key,
                Text(str(depth["visible"]), style="bold red" if depth["visible"] else "green"),
                str(depth["in_flight"]),
                Text(alarm or "—", style="bold red" if alarm == "ALARM" else ""),
                dlq.target_name or "the sweeper (order by order)",
            )
        ops.console.print(table)
        if alarms is None:
            ops.console.print("[dim]alarm states unavailable (CloudWatch did not answer)[/]")
        ops.console.print("next: [bold]python -m ops dlq show <name to type>[/]")

    _guarded(ctx, body)


def _alarm_states(queue_names: list[str]) -> dict[str, str] | None:
    """Queue name -> state of the alarm watching its depth; None when CloudWatch cannot be asked."""
    states: dict[str, str] = {}
    try:
        for page in aws.client("cloudwatch").get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm"]):
            for alarm in page.get("MetricAlarms", []):
                dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
                queue = dimensions.get("QueueName")
                # Several alarms on one queue: show the worst.
                if alarm.get("Namespace") == "AWS/SQS" and queue in queue_names and states.get(queue) != "ALARM":
                    states[queue] = alarm.get("StateValue", "?")
    except (ClientError, BotoCoreError):
        return None
    return states


@dlq_app.command("show")
def dlq_show(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help="orders, workflow, recon or review")],
    limit: Annotated[int, typer.Option(min=1, help="at most this many messages")] = 10,
) -> None:
    """The messages of a dead-letter queue, without consuming them."""

    def body(ops: Ops) -> None:
        dlq = find_dlq(queue)
        source = Queue(ops.resources.get(dlq.url_value))
        depth = source.depth()
        messages = source.peek(limit)
        if not messages:
            ops.console.print(f"[green]{dlq.name} is empty[/] ({depth['in_flight']} in flight)")
            return
        now = datetime.now(UTC)
        for number, message in enumerate(messages, 1):
            ops.console.print(_message_panel(number, message, now))
        ops.console.print(
            f"{len(messages)} shown of about {depth['visible']} in {dlq.name}. Nothing was consumed "
            f"(each look counts as one receive). Redrive: [bold]python -m ops dlq redrive {dlq.key}[/]")

    _guarded(ctx, body)


def _message_panel(number: int, message: Message, now: datetime) -> Panel:
    summary = message.summary()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    sent = message.sent_at
    rows = [
        ("charge", summary.charge_key or "—"),
        ("order", summary.payment_order_id or "—"),
        ("step", summary.step or "—"),
        ("error", mask_text(summary.error) or "—"),
        ("attempts", "—" if summary.attempts is None else str(summary.attempts)),
        ("received", f"{message.receive_count} time{'s' if message.receive_count != 1 else ''}"),
        ("age", f"{_age(now - sent)} (sent {sent:%Y-%m-%d %H:%M:%S} UTC)" if sent else "—"),
        *summary.extra.items(),
    ]
    for key, value in rows:
        facts.add_row(key, Text(value, style="red" if key == "error" and value != "—" else ""))
    body = message.body
    shown: Any = JSON.from_data(mask(body)) if body is not None else Text(mask_text(message.body_text))
    return Panel(Group(facts, Text(""), shown), title=f"#{number} · message {message.id}", title_align="left")


def _age(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h ago"
    if hours:
        return f"{hours}h {minutes}m ago"
    return f"{minutes}m ago" if minutes else f"{seconds}s ago"


@dlq_app.command("redrive")
def dlq_redrive(
    ctx: typer.Context,
    queue: Annotated[str, typer.Argument(help="orders, workflow, recon or review")],
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many messages (default: all)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would happen; change nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Send a dead-letter queue's messages back to work, one at a time. Safe to run again."""

    def body(ops: Ops) -> None:
        dlq = find_dlq(queue)
        source = Queue(ops.resources.get(dlq.url_value))
        depth = source.depth()
        if depth["visible"] == 0:
            ops.console.print(f"[green]{dlq.name} has no visible messages[/]"
                              + (f" ({depth['in_flight']} in flight: received by someone in the last minutes; "
                                 "try again shortly)" if depth["in_flight"] else ""))
            return
        count = f"{min(limit, depth['visible']) if limit else depth['visible']} message(s)"
        plan = ("each charge is put back to work through the sweeper; final charges are only acknowledged"
                if dlq.target_name is None else f"each goes back to {dlq.target_name}")
        ops.console.print(f"{dlq.name}: about {count} to redrive; {plan}.")
        if dry_run:
            ops.console.print("[yellow]dry run: nothing will change[/]")
        elif not yes and not typer.confirm(f"Redrive {count} from {dlq.name}?", default=False):
            ops.console.print("nothing done")
            return
        results = redrive_queue(dlq, ops.resources, limit=limit, dry_run=dry_run,
                                report=lambda result: ops.console.print(_result_line(result, dry_run)))
        _print_totals(ops.console, dlq, source, results, dry_run)
        if any(result.outcome.action is Action.LEFT for result in results):
            raise typer.Exit(1)

    _guarded(ctx, body)


def _result_line(result: Result, dry_run: bool) -> Text:
    action = result.outcome.action
    line = Text()
    line.append(f"{'(dry run) ' if dry_run else ''}{action.value:<18}", style=_ACTION_STYLE[action])
    line.append(f" {result.payment_order_id or '—':<24} ", style="bold")
    line.append(mask_text(result.outcome.detail))
    line.append(f"  [message {result.message.id[:8]}…, {'deleted' if result.deleted else 'kept'}]", style="dim")
    return line


def _print_totals(console: Console, dlq: Dlq, source: Queue, results: list[Result], dry_run: bool) -> None:
    counts = Counter(result.outcome.action.value for result in results)
    done = ", ".join(f"{n} {action}" for action, n in counts.items()) or "no messages received"
    console.print(f"{'dry run: ' if dry_run else ''}{done}")
    left = counts.get(Action.LEFT.value, 0)
    if left:
        console.print(f"[bold red]{left} message(s) left in {dlq.name}[/]: read them with "
                      f"[bold]python -m ops dlq show {dlq.key}[/], fix, and redrive again")
    if not dry_run:
        console.print(f"{dlq.name} now holds about {source.depth()['visible']} visible message(s)")


# -- order -------------------------------------------------------------------------------------------------


def _tables(resources: Resources) -> PaymentTables:
    resources.export_for_shared_code()
    return PaymentTables(resources.get("payment_events_table"), resources.get("payment_orders_table"),
                         resources.get("charges_table"))


@order_app.command("show")
def order_show(
    ctx: typer.Context,
    identifier: Annotated[str, typer.Argument(help="a payment_order_id, or a charge key <checkout_id>#<CURRENCY>")],
) -> None:
    """The order (its charge, ledger transaction payin#<id> and wallet movement), or a charge and its orders."""

    def body(ops: Ops) -> None:
        tables = _tables(ops.resources)
        if "#" in identifier:
            _show_charge(ops, tables, identifier)
            return
        view = load_order(tables, LedgerTable(ops.resources.get("ledger_table")),
                          ops.resources.get("wallet_table"), identifier)
        if view is None:
            raise OpsError(f"no order {identifier} in table {ops.resources.get('payment_orders_table')}")
        order = mask(view.order)
        status = order.get("payment_order_status", "?")
        facts = _grid()
        facts.add_row("status", Text(status, style=_STATUS_STYLE.get(status, "")))
        facts.add_row("amount", _money(order.get("amount_minor"), order.get("currency")))
        for key in ("seller_account", "checkout_id", "charge_key", "psp", "payment_method", "psp_reference",
                    "charge_id", "psp_status", "failure_code", "failure_reason", "wallet_updated", "ledger_updated",
                    "created_at", "updated_at"):
            if key in order:
                facts.add_row(key, str(order[key]))
        if "dead_letter_reason" in order:
            facts.add_row("dead-lettered", Text(str(order["dead_letter_reason"]), style="bold red"))
        if view.checkout:
            pending = view.checkout.get("pending_order_ids") or set()
            facts.add_row("checkout", f"is_payment_done={bool(view.checkout.get('is_payment_done'))}, "
                                      f"{len(pending)} order(s) of it not final")
        ops.console.print(Panel(facts, title=f"order {identifier}", title_align="left"))
        if view.charge:
            ops.console.print(_charge_panel(view.charge))
        ops.console.print(_ledger_panel(identifier, view.ledger))
        ops.console.print(_movement_panel(identifier, order.get("seller_account", ""), view.movement))
        ops.console.print(_next_step(identifier, order, view.charge))

    _guarded(ctx, body)


def _grid() -> Table:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    return facts


def _show_charge(ops: Ops, tables: PaymentTables, key: str) -> None:
    charge = tables.get_charge(key)
    if charge is None:
        raise OpsError(f"no charge {key} in table {ops.resources.get('charges_table')}")
    ops.console.print(_charge_panel(charge))
    orders = tables.get_orders([o["payment_order_id"] for o in charge["orders"]])
    table = Table(title=f"orders of {key}", title_justify="left")
    for column in ("payment_order_id", "seller", "amount", "status", "failure"):
        table.add_column(column)
    for share in charge["orders"]:
        order = orders.get(share["payment_order_id"], {})
        status = order.get("payment_order_status", "missing")
        table.add_row(share["payment_order_id"], share["seller_account"],
                      _money(share["amount_minor"], charge["currency"]),
                      Text(status, style=_STATUS_STYLE.get(status, "bold red")), order.get("failure_code") or "")
    ops.console.print(table)
    ops.console.print(_next_step(key, {"payment_order_status": charge["charge_status"], **charge}, charge))


def _charge_panel(charge: dict[str, Any]) -> Panel:
    charge = mask(charge)
    status = charge.get("charge_status", "?")
    facts = _grid()
    facts.add_row("status", Text(status, style=_STATUS_STYLE.get(status, "")))
    facts.add_row("amount", _money(charge.get("amount_minor"), charge.get("currency")))
    facts.add_row("orders", ", ".join(o["payment_order_id"] for o in charge.get("orders", [])))
    for key in ("payment_method", "psp", "psp_reference", "charge_id", "psp_status", "attempts", "psp_calls",
                "key_generation", "failure_code", "failure_reason", "first_attempt_at", "updated_at"):
        if key in charge:
            facts.add_row(key, str(charge[key]))
    if "due_at" in charge:
        facts.add_row("sweeper", f"watching: next look at {charge['due_at']} (shard {charge.get('sweep_shard')})")
    else:
        facts.add_row("sweeper", "not watching" + ("" if status in ("SUCCESS", "FAILED") else " (dead-lettered)"))
    if "dead_letter_reason" in charge:
        facts.add_row("dead-lettered", Text(str(charge["dead_letter_reason"]), style="bold red"))
    return Panel(facts, title=f"charge {charge.get('charge_key')}", title_align="left")


def _money(minor: Any, currency: Any) -> str:
    try:
        return str(Money(int(minor), str(currency)))
    except (MoneyError, TypeError, ValueError):
        return f"{minor} (minor units) {currency}"


def _ledger_panel(payment_order_id: str, transaction: dict[str, Any] | None) -> Panel:
    title = f"ledger transaction {ledger_transaction_id(PAYIN, payment_order_id)}"
    if transaction is None:
        return Panel("none written", title=title, title_align="left", style="dim")
    table = Table(box=None)
    table.add_column("account")
    table.add_column("amount", justify="right")
    sums: Counter[str] = Counter()
    for entry in transaction.get("entries", []):
        table.add_row(entry["account"], _money(entry["amount_minor"], entry["currency"]))
        sums[entry["currency"]] += int(entry["amount_minor"])
    balanced = all(total == 0 for total in sums.values())
    footer = Text(f"written {transaction.get('created_at', '?')}; ", style="dim")
    footer.append("balanced" if balanced else "NOT BALANCED", style="green" if balanced else "bold red")
    return Panel(Group(table, footer), title=title, title_align="left")


def _movement_panel(payment_order_id: str, seller: str, movement: dict[str, Any] | None) -> Panel:
    title = f"wallet movement {seller} {movement_key(PAYIN, payment_order_id)}"
    if movement is None:
        return Panel("none applied", title=title, title_align="left", style="dim")
    currency = movement.get("currency")
    text = (f"pending {_money(movement.get('pending_delta', 0), currency)}, "
            f"available {_money(movement.get('available_delta', 0), currency)}, "
            f"applied {movement.get('created_at', '?')}")
    return Panel(text, title=title, title_align="left")


def _next_step(identifier: str, order: dict[str, Any], charge: dict[str, Any] | None) -> str:
    if order.get("payment_order_status") in ("SUCCESS", "FAILED"):
        return "final: nothing to do for this order"
    if "dead_letter_reason" in order or (charge and "dead_letter_reason" in charge):
        return f"next: fix the cause, then [bold]python -m ops order redrive {identifier}[/]"
    return "in progress: the sweeper drives its charge again if the deadline passes"


@order_app.command("redrive")
def order_redrive(
    ctx: typer.Context,
    identifier: Annotated[str, typer.Argument(help="a payment_order_id, or a charge key <checkout_id>#<CURRENCY>")],
) -> None:
    """Put the charge of one order (or one charge) back to work, for every order of it; a final charge only gets
    its checkout completed. Its WorkflowDlq message, if any, stays until redriven."""

    def body(ops: Ops) -> None:
        outcome = redrive_order(_tables(ops.resources), identifier)
        line = Text(f"{outcome.action.value}: ", style=_ACTION_STYLE[outcome.action])
        line.append(mask_text(outcome.detail))
        ops.console.print(line)
        if outcome.action is Action.LEFT:
            raise typer.Exit(1)

    _guarded(ctx, body)


# -- payouts -----------------------------------------------------------------------------------------------

_PAYOUT_KEYS = ("seller_account", "checkout_id", "charge_id", "commission_bps", "release_applied", "released_at",
                "auto_release_at", "transfer_id", "transfer_attempts", "first_transfer_at", "transferred_at",
                "awaiting_seller", "last_error", "payout_failure_code", "payout_failure_reason", "retried_at",
                "settled_at", "updated_at")


def _payouts(resources: Resources) -> PayoutsTable:
    resources.export_for_shared_code("payouts_table", "sellers_table", "payouts_queue_url")
    return PayoutsTable.from_settings()


@payouts_app.command("show")
def payouts_show(
    ctx: typer.Context,
    payment_order_id: Annotated[str, typer.Argument(help="the order whose payout to show")],
) -> None:
    """The payout (status, amounts, transfer), its seller's account, and its wallet movements and ledger
    transactions (payin, release, transfer)."""

    def body(ops: Ops) -> None:
        payouts = _payouts(ops.resources)
        view = load_payout(payouts, SellersTable.from_settings(), LedgerTable(ops.resources.get("ledger_table")),
                           ops.resources.get("wallet_table"), payment_order_id)
        if view is None:
            raise OpsError(f"no payout {payment_order_id} in table {payouts.table} (not SUCCESS yet, or settled "
                           f"before payouts: releasing it creates one)")
        ops.console.print(_payout_panel(payment_order_id, view))
        ops.console.print(_payout_books(payment_order_id, view))
        ops.console.print(_payout_next_step(payment_order_id, view.payout))

    _guarded(ctx, body)


def _payout_panel(payment_order_id: str, view: PayoutView) -> Panel:
    payout = view.payout
    status = payout.get("payout_status", "?")
    currency = payout.get("currency")
    facts = _grid()
    facts.add_row("status", Text(status, style=_STATUS_STYLE.get(status, "")))
    facts.add_row("gross", _money(payout.get("gross_minor"), currency))
    if "net_minor" in payout:
        facts.add_row("commission", _money(payout.get("commission_minor"), currency))
        facts.add_row("seller net", _money(payout.get("net_minor"), currency))
    for key in _PAYOUT_KEYS:
        if key in payout:
            facts.add_row(key, str(payout[key]))
    seller = view.seller
    facts.add_row("seller's account", (seller or {}).get("psp_account_id") or
                  Text("none registered: the payout waits for it", style="yellow"))
    if "due_at" in payout:
        facts.add_row("sweeper", f"watching: next look at {payout['due_at']} (shard {payout.get('sweep_shard')})")
    else:
        facts.add_row("sweeper", "not watching" + ("" if status in ("TRANSFERRED", "FAILED", "HELD")
                                                   else " (dead-lettered)"))
    if "dead_letter_reason" in payout:
        facts.add_row("dead-lettered", Text(str(payout["dead_letter_reason"]), style="bold red"))
    return Panel(facts, title=f"payout {payment_order_id}", title_align="left")


def _payout_books(payment_order_id: str, view: PayoutView) -> Table:
    table = Table(title=f"wallet and ledger of {payment_order_id}", title_justify="left")
    for column in ("kind", "wallet movement", "ledger transaction"):
        table.add_column(column)
    for kind in MONEY_CYCLE_KINDS:
        move, transaction = view.movements.get(kind), view.ledger.get(kind)
        currency = (move or {}).get("currency")
        moved = ", ".join(f"{bucket} {_money(move.get(f'{bucket}_delta', 0), currency)}"
                          for bucket in ("pending", "available", "transferred")
                          if move.get(f"{bucket}_delta")) if move else "none applied"
        booked = "; ".join(f"{entry['account']} {_money(entry['amount_minor'], entry['currency'])}"
                           for entry in transaction.get("entries", [])) if transaction else "none written"
        table.add_row(kind, moved or "applied (zero)", booked)
    return table


def _payout_next_step(payment_order_id: str, payout: dict[str, Any]) -> str:
    status = payout.get("payout_status")
    if status == "FAILED" or "dead_letter_reason" in payout:
        return (f"next: fix the cause (the seller's account), then "
                f"[bold]python -m ops payouts retry {payment_order_id}[/]")
    if status == "TRANSFERRED":
        return "final: nothing to do for this payout"
    if status == "HELD":
        return "held: released when the storefront confirms delivery" + (
            f" or at {payout['auto_release_at']}" if "auto_release_at" in payout else "")
    return "in progress: the sweeper sends it to the Transfer worker again if its deadline passes"


@payouts_app.command("retry")
def payouts_retry(
    ctx: typer.Context,
    payment_order_id: Annotated[str, typer.Argument(help="the order whose FAILED or dead-lettered payout to retry")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would happen; change nothing")] = False,
) -> None:
    """Put a FAILED payout back to RELEASED (or a dead-lettered one back under watch) and send it to the Transfer
    worker: the same PSP key, so a transfer made before is found, never made twice. Fix the cause first."""

    def body(ops: Ops) -> None:
        outcome = retry_payout(_payouts(ops.resources), payment_order_id, dry_run=dry_run)
        line = Text(f"{'(dry run) ' if dry_run else ''}{outcome.action.value}: ",
                    style=_ACTION_STYLE[outcome.action])
        line.append(mask_text(outcome.detail))
        ops.console.print(line)
        if outcome.action is Action.LEFT:
            raise typer.Exit(1)

    _guarded(ctx, body)


# -- notifications -----------------------------------------------------------------------------------------

notifications_app = typer.Typer(no_args_is_help=True, help="The storefront's notification endpoint: show, set.")
app.add_typer(notifications_app, name="notifications")


def _endpoints(resources: Resources) -> Any:
    from functions.shared.tables import NotificationEndpointsTable

    return NotificationEndpointsTable(resources.get("notification_endpoints_table"))


@notifications_app.command("set-endpoint")
def notifications_set_endpoint(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="https URL (plain http only to 127.0.0.1 or localhost)")],
    secret: Annotated[str | None, typer.Option(help="signing secret (default: kept, or generated for a new one)")]
    = None,
    client: Annotated[str, typer.Option(help="the storefront client whose endpoint this is")] = "default",
) -> None:
    """Set where a client's status changes are POSTed (as its PUT /v1/notification_endpoint does). A generated
    secret is printed once: give it to the storefront."""
    from functions.notify.endpoints import EndpointRequest, set_endpoint
    from functions.shared.errors import DomainError

    def body(ops: Ops) -> None:
        try:
            view, created = set_endpoint(EndpointRequest(url=url, secret=secret), client_id=client,
                                         table=_endpoints(ops.resources))
        except (DomainError, ValueError) as error:
            raise OpsError(f"refused: {getattr(error, 'message', error)}") from error
        ops.console.print(f"{'created' if created else 'updated'}: {view.client_id} -> {view.url}")
        generated = getattr(view, "secret", None)  # only when generated now (CreatedEndpointView)
        if generated:
            ops.console.print(f"signing secret (shown once): {generated}")

    _guarded(ctx, body)


@notifications_app.command("show")
def notifications_show(
    ctx: typer.Context,
    client: Annotated[str, typer.Option(help="the storefront client whose endpoint to show")] = "default",
) -> None:
    """A client's endpoint (never its secret)."""

    def body(ops: Ops) -> None:
        item = _endpoints(ops.resources).get(client)
        if item is None:
            raise OpsError(f"{client} has no notification endpoint: `ops notifications set-endpoint --url ...`")
        ops.console.print(f"{item['client_id']} -> {item['url']} (updated {item['updated_at']})")

    _guarded(ctx, body)


# -- API keys ------------------------------------------------------------------------------------------------

keys_app = typer.Typer(no_args_is_help=True, help="Storefront API keys: create, list, revoke.")
app.add_typer(keys_app, name="keys")


def _keys(resources: Resources) -> Any:
    from functions.shared.tables import ApiKeysTable

    return ApiKeysTable(resources.get("api_keys_table"))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    client_id: Annotated[str, typer.Argument(help="the storefront client the key acts for")],
    scopes: Annotated[list[str] | None, typer.Option("--scopes", help="repeat for each (default: every scope but "
                                                               "the operator's offline_payments:write)")]
    = None,
    live: Annotated[bool, typer.Option("--live", help="an mk_live_ key (default: mk_test_)")] = False,
    rate_limit: Annotated[int | None, typer.Option("--rate-limit", help="requests per second (default: 50)")]
    = None,
) -> None:
    """Make a key and print it once: only its SHA-256 is stored, so it cannot be shown again."""
    from functions.auth.keys import issue
    from functions.shared.names import DEFAULT_SCOPES

    def body(ops: Ops) -> None:
        try:
            key = issue(_keys(ops.resources), client_id, scopes or DEFAULT_SCOPES, "live" if live else "test",
                        rate_limit)
        except ValueError as error:
            raise OpsError(str(error)) from error
        ops.console.print(f"key for {client_id} (shown once; keep it in the storefront's secret store):")
        ops.console.print(key, soft_wrap=True)

    _guarded(ctx, body)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every key: its id (first characters), client, scopes, created and revoked times; never the key."""

    def body(ops: Ops) -> None:
        table = Table("key id", "client", "scopes", "per s", "created", "revoked")
        for item in sorted(_keys(ops.resources).all(), key=lambda k: (k["client_id"], k["created_at"])):
            revoked = item.get("revoked_at")
            table.add_row(item["key_id"] + "…", item["client_id"], " ".join(item.get("scopes", [])),
                          str(item.get("rate_limit_per_s") or "default"), item["created_at"],
                          Text(revoked, style="red") if revoked else "")
        ops.console.print(table)

    _guarded(ctx, body)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="the key id `keys list` shows (mk_test_xxxxxx)")],
) -> None:
    """Revoke a key. The authorizer may keep honouring it for up to its cache time (60 s) after this."""

    def body(ops: Ops) -> None:
        keys = _keys(ops.resources)
        found = [k for k in keys.all() if k["key_id"] == key_id]
        if len(found) != 1:
            raise OpsError(f"{len(found)} keys have the id {key_id}: `ops keys list` shows them")
        keys.revoke(found[0]["key_hash"], clock.iso())
        ops.console.print(f"revoked {key_id} of {found[0]['client_id']}")

    _guarded(ctx, body)


# -- recon -------------------------------------------------------------------------------------------------


@recon_app.command("internal")
def recon_internal(
    ctx: typer.Context,
    fix: Annotated[bool, typer.Option("--fix/--no-fix", help="re-drive the wallet and ledger steps of SUCCESS "
                                                              "orders they missed (nothing else is changed)")] = True,
    settle_s: Annotated[int, typer.Option("--settle-s", min=0, help="changes younger than this are in flight and "
                                                                    "not judged (0: the system is known quiet)")] = 300,
) -> None:
    """Orders, wallets, ledger, pay-outs and refunds against each other, per seller and currency (what the
    nightly schedule runs): a summary per category, each finding, and the report written to the settlement
    bucket (JSON, CSV, HTML). Exit code 1 when anything is unexplained."""
    from functions.recon import internal

    def body(ops: Ops) -> None:
        ops.resources.export_for_shared_code("payouts_table", "sellers_table", "refunds_table", "settlement_bucket")
        report, keys = internal.run(fix=fix, settle=timedelta(seconds=settle_s))
        totals = Table(title="internal reconciliation")
        for column in ("category", "found", "fixed", "amounts"):
            totals.add_column(column, justify="left" if column in ("category", "amounts") else "right")
        for category, values in report.totals().items():
            amounts = ", ".join(_money(minor, cur) for cur, minor in sorted(values["amounts"].items())) or "-"
            style = "green" if not values["count"] else ("cyan" if values["fixed"] == values["count"] else "bold red")
            totals.add_row(Text(category, style=style), str(values["count"]), str(values["fixed"]), amounts)
        ops.console.print(totals)
        for finding in report.findings:
            mark = Text("fixed", style="cyan") if finding.fixed else Text("UNEXPLAINED", style="bold red")
            ops.console.print(Text.assemble(mark, f" {finding.category.value} {finding.seller_account} ",
                                            _money(finding.amount_minor, finding.currency),
                                            f" {' '.join(finding.ids)} {finding.detail}"))
        summary = report.summary()
        busy = (report.checked["orders_in_flight"], report.checked["balances_in_flight"])
        if any(busy):
            ops.console.print(f"in flight (younger than {settle_s} s, judged by the next run): {busy[0]} orders, "
                              f"{busy[1]} balances")
        ops.console.print(f"{summary['total']} findings, {summary['fixed']} fixed, {summary['unexplained']} "
                          f"unexplained; report: s3://{ops.resources.get('settlement_bucket')}/{keys['html']} "
                          f"(.json, .csv)")
        if summary["unexplained"]:
            raise typer.Exit(1)

    _guarded(ctx, body)


# -- offline payments (issue 17) ---------------------------------------------------------------------------

offline_app = typer.Typer(no_args_is_help=True, help="Checks and money orders: record the funds, or a bounce.")
app.add_typer(offline_app, name="offline")


def _offline_answer(ops: Ops, run: Any) -> None:
    from functions.shared.errors import DomainError

    ops.resources.export_for_shared_code("payouts_table", "sellers_table", "refunds_table", "refunds_queue_url")
    try:
        view, replayed = run()
    except DomainError as refused:
        raise OpsError(f"{refused.code}: {refused.message}") from refused
    line = Text(f"{view.status}{' (recorded before: nothing changed)' if replayed else ''}: ",
                style="cyan" if replayed else "green")
    line.append(f"{view.checkout_id} {view.amount} {view.currency} {view.method} {view.reference} "
                f"recorded {view.recorded_at}" + (f", bounced {view.bounced_at}" if view.bounced_at else ""))
    ops.console.print(line)


@offline_app.command("record")
def offline_record(
    ctx: typer.Context,
    checkout_id: Annotated[str, typer.Argument(help="the checkout paid by check or money order")],
    amount: Annotated[str, typer.Option("--amount", help='as received, e.g. "45.00": must be the charge\'s')],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code of the charge")],
    reference: Annotated[str, typer.Option("--reference", help="as written on the payment (MP-XXXXX-XXXXX)")],
) -> None:
    """Record a check's or money order's funds (what POST /v1/checkouts/{id}/offline_payments does): the orders
    finalize SUCCESS with the sweeper's next run. Sent again, it changes nothing."""
    from functions.payment import offline
    from functions.payment.schemas import OfflinePaymentRequest

    def body(ops: Ops) -> None:
        try:
            request = OfflinePaymentRequest(amount=amount, currency=currency.upper(), reference=reference)
        except ValueError as error:
            raise OpsError(f"invalid amount or currency: {error}") from None
        _offline_answer(ops, lambda: offline.record_payment(checkout_id, request))

    _guarded(ctx, body)


_JSON = typer.Option("--json", help="print the answer as JSON (stdout), nothing else")


def _print_json(ops: Ops, data: Any) -> None:
    ops.console.print_json(json.dumps(data), highlight=False)


@recon_app.command("reports")
def recon_reports(
    ctx: typer.Context,
    psp: Annotated[str | None, typer.Option("--psp", help="a PSP (stripe, adyen…) or `internal`")] = None,
    date: Annotated[str | None, typer.Option("--date", help="written on this day, YYYY-MM-DD (UTC)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The settlement (one per PSP file) and internal recon reports in the settlement bucket: key, when, totals
    and the categories that have rows."""

    def body(ops: Ops) -> None:
        bucket = ops.resources.get("settlement_bucket")
        found = list_reports(bucket, source=psp, day=date, limit=limit)
        if as_json:
            _print_json(ops, [report.to_dict() for report in found])
            return
        if not found:
            ops.console.print(f"no reports in s3://{bucket}/reports/" + (f" for {psp}" if psp else "")
                              + (f" written on {date}" if date else ""))
            return
        table = Table(title=f"recon reports in {bucket}", title_justify="left")
        for column in ("key", "source", "written", "total", "fixed", "unexplained", "categories"):
            table.add_column(column, justify="right" if column in ("total", "fixed", "unexplained") else "left")
        for report in found:
            summary = report.summary
            unexplained = summary.get("unexplained")
            table.add_row(report.key, report.source if report.kind != "duplicate" else f"{report.source} (duplicate)",
                          report.written_at, str(summary.get("total", "—")), str(summary.get("fixed", "—")),
                          Text(str(unexplained if unexplained is not None else "—"),
                               style="bold red" if unexplained else ""),
                          _categories_text(report.categories) or summary.get("explanation", "—"))
        ops.console.print(table)
        ops.console.print("next: [bold]python -m ops recon report show <key>[/]")

    _guarded(ctx, body)


def _categories_text(categories: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, values in categories.items():
        amounts = ", ".join(f"{amount} {cur}" for cur, amount in values["amounts"].items())
        parts.append(f"{name} {values['count']}" + (f" ({amounts})" if amounts else ""))
    return "; ".join(parts)


report_app = typer.Typer(no_args_is_help=True, help="One recon report: show.")
recon_app.add_typer(report_app, name="report")


@report_app.command("show")
def recon_report_show(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="the report's key (its .json, .csv or .html), as `recon reports` lists")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """A report's summary (its JSON without the list of findings) and where its HTML page is."""

    def body(ops: Ops) -> None:
        bucket = ops.resources.get("settlement_bucket")
        report = load_report(bucket, key)
        if as_json:
            _print_json(ops, {**report.to_dict(), "summary": report.summary})
            return
        facts = _grid()
        facts.add_row("source", report.source)
        facts.add_row("kind", report.kind)
        facts.add_row("written", report.written_at)
        for name, value in report.summary.items():
            if name != "categories":
                facts.add_row(name, json.dumps(value) if isinstance(value, dict | list) else str(value))
        ops.console.print(Panel(facts, title=f"report {report.key}", title_align="left"))
        if report.categories:
            table = Table(title="categories with rows", title_justify="left")
            for column in ("category", "count", "amounts"):
                table.add_column(column, justify="right" if column == "count" else "left")
            for name, values in report.categories.items():
                table.add_row(name, str(values["count"]),
                              ", ".join(f"{amount} {cur}" for cur, amount in values["amounts"].items()) or "—")
            ops.console.print(table)
        if report.html_key:
            ops.console.print(f"HTML page: s3://{bucket}/{report.html_key}")
            ops.console.print(f"open it: [bold]aws s3 cp s3://{bucket}/{report.html_key} report.html[/]")
        else:
            ops.console.print(f"no HTML page beside it (s3://{bucket}/{report.key})")

    _guarded(ctx, body)


# -- sellers -----------------------------------------------------------------------------------------------

sellers_app = typer.Typer(no_args_is_help=True, help="A seller's money: balance, statement.")
app.add_typer(sellers_app, name="sellers")


def _export_sellers(resources: Resources) -> None:
    resources.export_for_shared_code("payouts_table", "sellers_table", "payouts_queue_url")


def _domain(call: Any) -> Any:
    """The API's answer; its refusals (404, 422) become the tool's one red line."""
    from functions.shared.errors import DomainError

    try:
        return call()
    except DomainError as error:
        raise OpsError(f"{error.code}: {error.message}") from error


@sellers_app.command("balance")
def sellers_balance(
    ctx: typer.Context,
    seller: Annotated[str, typer.Argument(help="the seller_account (internal id: `<client>~<id>` for a client's)")],
    currency: Annotated[str | None, typer.Option(help="only this currency (ISO 4217)")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Per currency: pending (held until released), available, transferred and owed, the numbers
    GET /v1/sellers/{seller}/balance answers."""
    from functions.payment import payouts

    def body(ops: Ops) -> None:
        _export_sellers(ops.resources)
        view = _domain(lambda: payouts.balance(seller))
        balances = {cur: amounts for cur, amounts in view.balances.items()
                    if currency is None or cur == currency.upper()}
        if as_json:
            _print_json(ops, {"seller_account": view.seller_account,
                              "balances": {cur: amounts.model_dump() for cur, amounts in balances.items()}})
            return
        table = Table(title=f"balance of {seller}", title_justify="left")
        for column in ("currency", "pending (held)", "available", "transferred", "owed"):
            table.add_column(column, justify="left" if column == "currency" else "right")
        for cur, amounts in balances.items():
            owed = Text(amounts.owed, style="bold red" if Money.from_major(amounts.owed, cur).minor else "")
            table.add_row(cur, amounts.pending, amounts.available, amounts.transferred, owed)
        ops.console.print(table)
        if not balances:
            ops.console.print(f"no money moved for {seller}" + (f" in {currency.upper()}" if currency else ""))

    _guarded(ctx, body)


@offline_app.command("bounce")
def offline_bounce(
    ctx: typer.Context,
    checkout_id: Annotated[str, typer.Argument(help="the checkout whose recorded check or money order bounced")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code of the charge")],
    reference: Annotated[str, typer.Option("--reference", help="the charge's reference (MP-XXXXX-XXXXX)")],
) -> None:
    """The bank returned a recorded check or money order: each order is refunded of what remains through the
    refund path (the seller's share included). Refused before the orders are SUCCESS; sent again, it completes
    what is missing and changes nothing else."""
    from functions.payment import offline
    from functions.payment.schemas import OfflineBounceRequest

    def body(ops: Ops) -> None:
        request = OfflineBounceRequest(currency=currency.upper(), reference=reference)
        _offline_answer(ops, lambda: offline.bounce(checkout_id, request))

    _guarded(ctx, body)


@sellers_app.command("statement")
def sellers_statement(
    ctx: typer.Context,
    seller: Annotated[str, typer.Argument(help="the seller_account (internal id: `<client>~<id>` for a client's)")],
    start: Annotated[str | None, typer.Option("--from", help="ISO 8601 time, default 30 days before --to")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 time (excluded), default now")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="print the CSV the API gives with Accept: text/csv")] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The seller's wallet movements in [from, to), oldest first, as GET /v1/sellers/{seller}/statement."""
    from functions.payment import payouts

    def body(ops: Ops) -> None:
        _export_sellers(ops.resources)
        lines = _domain(lambda: payouts.statement(seller, start, end))
        if as_csv:
            typer.echo(payouts.statement_csv(lines), nl=False)
            return
        if as_json:
            _print_json(ops, [line.model_dump() for line in lines])
            return
        table = Table(title=f"statement of {seller}", title_justify="left")
        columns = ("created_at", "kind", "payment_order_id", "currency", "gross", "commission", "net", "pending",
                   "available", "transferred", "owed", "transfer_id")
        for column in columns:
            table.add_column(column, justify="right" if column in ("gross", "commission", "net", "pending",
                                                                    "available", "transferred", "owed") else "left")
        for line in lines:
            values = line.model_dump()
            table.add_row(*("" if values[column] is None else str(values[column]) for column in columns))
        ops.console.print(table)
        ops.console.print(f"{len(lines)} movement(s)")

    _guarded(ctx, body)


# -- refunds -----------------------------------------------------------------------------------------------

refunds_app = typer.Typer(no_args_is_help=True, help="One refund: show.")
app.add_typer(refunds_app, name="refunds")


@refunds_app.command("show")
def refunds_show(
    ctx: typer.Context,
    refund_id: Annotated[str, typer.Argument(help="the refund_id (internal id: `<client>~<id>` for a client's)")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The refund as GET /v1/refunds/{refund_id} shows it (status, shares, reversal, failure), and its order."""
    from functions.payment import refunds

    def body(ops: Ops) -> None:
        ops.resources.export_for_shared_code("refunds_table")
        view = _domain(lambda: refunds.get_refund(refund_id))
        order = _tables(ops.resources).get_order(view.payment_order_id) or {}
        if as_json:
            _print_json(ops, {**view.model_dump(), "order": _order_summary(order)})
            return
        status_style = {"SUCCEEDED": "green", "FAILED": "red", "PENDING": "yellow"}
        facts = _grid()
        facts.add_row("status", Text(view.status, style=status_style.get(view.status, "")))
        facts.add_row("amount", f"{view.amount} {view.currency}")
        for name in ("reason", "psp_refund_id", "timing", "seller_share", "commission_share", "failure_code",
                     "failure_reason", "created_at", "updated_at"):
            value = getattr(view, name)
            if value is not None:
                facts.add_row(name, Text(str(value), style="red" if name.startswith("failure") else ""))
        if view.reversal is not None:
            reversal = view.reversal
            style = "bold red" if reversal.status != "SUCCEEDED" else ""
            facts.add_row("reversal", Text(f"{reversal.status} {reversal.id or ''} {reversal.failure_code or ''}"
                                           .strip(), style=style))
        ops.console.print(Panel(facts, title=f"refund {view.refund_id}", title_align="left"))
        summary = _order_summary(order)
        if not summary:
            ops.console.print(f"order {view.payment_order_id}: not found")
            return
        facts = _grid()
        for name, value in summary.items():
            facts.add_row(name, str(value))
        ops.console.print(Panel(facts, title=f"order {view.payment_order_id}", title_align="left"))
        ops.console.print(f"more: [bold]python -m ops order show {view.payment_order_id}[/], "
                          f"[bold]python -m ops payouts show {view.payment_order_id}[/]")

    _guarded(ctx, body)


def _order_summary(order: dict[str, Any]) -> dict[str, Any]:
    if not order:
        return {}
    currency = order.get("currency")
    summary = {"status": order.get("payment_order_status"), "amount": _money(order.get("amount_minor"), currency),
               "refunded": _money(order.get("refunded_minor") or 0, currency),
               "refunds": " ".join(sorted(order.get("refund_ids") or ())),
               "seller_account": order.get("seller_account"), "checkout_id": order.get("checkout_id")}
    return {name: value for name, value in summary.items() if value not in (None, "")}


# -- PSPs: circuit breakers (issue 18) ---------------------------------------------------------------------------

psp_app = typer.Typer(no_args_is_help=True, help="The PSPs' circuit breakers: health, open, close.")
app.add_typer(psp_app, name="psp")
_BREAKER_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


def _breaker(resources: Resources) -> Any:
    from functions.shared.breaker import Breaker
    from functions.shared.config import settings

    resources.export_for_shared_code("psp_health_table")
    return Breaker.from_settings(settings())


def _routable(psp: str) -> str:
    from functions.shared.routing import ROUTABLE_PSPS

    if psp not in ROUTABLE_PSPS:
        raise OpsError(f"unknown PSP {psp!r}: use one of {', '.join(ROUTABLE_PSPS)}")
    return psp


def _breaker_row(view: Any) -> dict[str, Any]:
    return {"psp": view.psp, "state": view.state, "failures": view.failures, "open_until": view.open_until,
            "last_failure": view.last_failure, "last_failure_at": view.last_failure_at, "trips": view.trips,
            "updated_at": view.updated_at}


def _print_breakers(ops: Ops, views: list[Any], as_json: bool) -> None:
    if as_json:
        _print_json(ops, [_breaker_row(view) for view in views])
        return
    table = Table("psp", "state", "failures", "open until", "trips", "last failure", "at")
    for view in views:
        table.add_row(view.psp, Text(view.state, style=_BREAKER_STYLE.get(view.state, "")), str(view.failures),
                      view.open_until, str(view.trips), mask_text(view.last_failure), view.last_failure_at)
    ops.console.print(table)


@psp_app.command("health")
def psp_health(ctx: typer.Context, as_json: Annotated[bool, _JSON] = False) -> None:
    """Each PSP's breaker: closed (calls go), open (none until `open until`), half_open (the next call probes)."""
    from functions.shared.routing import ROUTABLE_PSPS

    def body(ops: Ops) -> None:
        _print_breakers(ops, _breaker(ops.resources).views(ROUTABLE_PSPS), as_json)

    _guarded(ctx, body)


@psp_app.command("open")
def psp_open(
    ctx: typer.Context,
    psp: Annotated[str, typer.Argument(help="the PSP (stripe, adyen)")],
    minutes: Annotated[int, typer.Option("--minutes", min=1, max=24 * 60, help="how long (an announced "
                                                                                "maintenance)")] = 30,
) -> None:
    """Send no calls to a PSP for a while: new charges go where routing's failover sends them, the rest waits."""
    from functions.shared.breaker import OPEN

    def body(ops: Ops) -> None:
        _print_breakers(ops, [_breaker(ops.resources).force(_routable(psp), OPEN, minutes=minutes, by="ops")],
                        False)

    _guarded(ctx, body)


@psp_app.command("close")
def psp_close(ctx: typer.Context, psp: Annotated[str, typer.Argument(help="the PSP (stripe, adyen)")]) -> None:
    """Calls go to the PSP again now, failures forgotten (it recovered before its breaker's probe saw it)."""
    from functions.shared.breaker import CLOSED

    def body(ops: Ops) -> None:
        _print_breakers(ops, [_breaker(ops.resources).force(_routable(psp), CLOSED, by="ops")], False)

    _guarded(ctx, body)
