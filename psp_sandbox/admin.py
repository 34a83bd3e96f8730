"""The `/_sandbox/` admin API (JSON): faults, clock, reset, ground-truth charges and transfers, connected accounts
(restrict, unrestrict, bank payout), the platform's balance switch, settlement export."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from . import errors
from .disputes import close_dispute, open_dispute
from .faults import FaultConfigError
from .sandbox import Sandbox
from .settlement import BALANCE_REPORT, SettlementError, build_report

Answer = tuple[int, dict[str, Any] | str, str]
_JSON = "application/json"
_RESOLVE = re.compile(r"/_sandbox/payment_intents/(?P<id>[^/]+)/resolve")
_DEBIT_RETURN = re.compile(r"/_sandbox/payment_intents/(?P<id>[^/]+)/return")
_REFUND_RESOLVE = re.compile(r"/_sandbox/refunds/(?P<id>[^/]+)/resolve")
_DISPUTE_OPEN = re.compile(r"/_sandbox/charges/(?P<id>[^/]+)/dispute")
_DISPUTE_CLOSE = re.compile(r"/_sandbox/disputes/(?P<id>[^/]+)/(?P<action>win|lose)")
_ACCOUNT = re.compile(r"/_sandbox/accounts/(?P<id>[^/]+)/(?P<action>restrict|unrestrict|payout)")


class AdminError(ValueError):
    """A bad admin request (400)."""


class AdminApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def handle(self, method: str, path: str, query: str, body: str) -> Answer:
        try:
            data = json.loads(body) if body.strip() else {}
            return self._route(method, path, parse_qs(query), data)
        except (AdminError, FaultConfigError, SettlementError, json.JSONDecodeError, TypeError) as exc:
            return 400, {"error": {"type": "sandbox_error", "message": str(exc)}}, _JSON
        except errors.StripeApiError as exc:
            return exc.status, exc.body(), _JSON

    def _route(self, method: str, path: str, query: dict[str, list[str]], data: Any) -> Answer:
        sandbox = self.sandbox
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_sandbox/health"):
            return 200, {"ok": True}, _JSON
        if route == ("POST", "/_sandbox/reset"):
            sandbox.reset(data.get("seed"))
            return 200, {"ok": True}, _JSON
        if route == ("GET", "/_sandbox/faults"):
            return 200, sandbox.faults.describe(), _JSON
        if route == ("POST", "/_sandbox/faults"):
            sandbox.faults.load(data)
            return 200, sandbox.faults.describe(), _JSON
        if route == ("DELETE", "/_sandbox/faults"):
            sandbox.faults.reset()
            return 200, sandbox.faults.describe(), _JSON
        if route == ("GET", "/_sandbox/faults/stats"):
            return 200, sandbox.faults.stats(), _JSON
        if route == ("GET", "/_sandbox/clock"):
            return 200, {"now": sandbox.clock.timestamp()}, _JSON
        if route == ("POST", "/_sandbox/clock"):
            seconds = data.get("advance_seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise AdminError("advance_seconds must be a non-negative number")
            pruned = sandbox.advance_clock(seconds)
            return 200, {"now": sandbox.clock.timestamp(), "pruned_keys": pruned}, _JSON
        if route == ("GET", "/_sandbox/charges"):
            return 200, {"data": sandbox.charges()}, _JSON
        if route == ("GET", "/_sandbox/idempotency_keys"):
            return 200, {"data": sandbox.idempotency.keys()}, _JSON
        if route == ("GET", "/_sandbox/settlement"):
            return self._settlement(query)
        if route == ("GET", "/_sandbox/transfers"):
            return 200, {"data": sandbox.state.transfer_records()}, _JSON
        if route == ("GET", "/_sandbox/accounts"):
            return 200, {"data": sandbox.state.account_records()}, _JSON
        if route == ("GET", "/_sandbox/balance"):
            return 200, self._balance(), _JSON
        if route == ("POST", "/_sandbox/balance"):
            short = data.get("short")
            if not isinstance(short, bool):
                raise AdminError("short must be true or false")
            sandbox.state.set_balance_short(short)
            return 200, self._balance(), _JSON
        if method == "POST" and (match := _ACCOUNT.fullmatch(path)):
            return 200, sandbox.state.to_json(self._account_action(match["id"], match["action"], data)), _JSON
        if route == ("POST", "/_sandbox/refunds"):
            seconds = data.get("pending_seconds")
            if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
                raise AdminError("pending_seconds must be a non-negative integer")
            sandbox.state.refund_pending_seconds = seconds
            return 200, {"pending_seconds": seconds}, _JSON
        if method == "POST" and (match := _REFUND_RESOLVE.fullmatch(path)):
            refund = sandbox.state.resolve_refund(match["id"], str(data.get("outcome")))
            return 200, sandbox.state.to_json(refund), _JSON
        if method == "POST" and (match := _DEBIT_RETURN.fullmatch(path)):
            pi = sandbox.state.return_debit(match["id"], str(data.get("code") or "insufficient_funds"))
            return 200, sandbox.state.to_json(pi), _JSON
        if method == "POST" and (match := _RESOLVE.fullmatch(path)):
            pi = sandbox.state.resolve_payment_intent(match["id"], str(data.get("outcome")))
            return 200, sandbox.state.to_json(pi), _JSON
        if method == "POST" and (match := _DISPUTE_OPEN.fullmatch(path)):
            amount, reason = data.get("amount"), data.get("reason")
            if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
                raise AdminError("amount must be an integer (the charge's minor units) or left out")
            dispute = open_dispute(sandbox.state, match["id"], amount, reason and str(reason),
                                   inquiry=data.get("inquiry") is True)
            return 200, sandbox.state.to_json(dispute), _JSON
        if method == "POST" and (match := _DISPUTE_CLOSE.fullmatch(path)):
            dispute = close_dispute(sandbox.state, match["id"], "won" if match["action"] == "win" else "lost")
            return 200, sandbox.state.to_json(dispute), _JSON
        return 404, {"error": {"type": "sandbox_error", "message": f"no admin route {method} {path}"}}, _JSON

    def _account_action(self, account_id: str, action: str, data: dict[str, Any]) -> Any:
        state = self.sandbox.state
        if action == "restrict":
            return state.restrict_account(account_id, str(data.get("reason", "requirements.past_due")))
        if action == "unrestrict":
            return state.unrestrict_account(account_id)
        amount, currency = data.get("amount"), data.get("currency")
        if not isinstance(amount, int) or isinstance(amount, bool) or not isinstance(currency, str):
            raise AdminError("payout needs an integer amount and a currency")
        return state.pay_out_account(account_id, amount, currency.lower())

    def _balance(self) -> dict[str, Any]:
        available, pending = self.sandbox.state.platform_balance()
        return {"short": self.sandbox.state.balance_short, "available": available, "pending": pending}

    def _settlement(self, query: dict[str, list[str]]) -> Answer:
        def one(name: str, default: str = "") -> str:
            return query.get(name, [default])[-1]

        plant = [k for k in one("plant").split(",") if k]
        targets = {}
        for item in (t for t in one("targets").split(",") if t):
            kind, _, target = item.partition(":")
            targets[kind] = target
        try:
            seed = int(one("seed", "0"))
        except ValueError as exc:
            raise AdminError("seed must be an integer") from exc
        export = build_report(
            self.sandbox.state,
            one("report", BALANCE_REPORT),
            plant=plant,
            seed=seed,
            targets=targets,
            decimal_style=one("decimal_style", "fixed"),
            separate_fees=one("separate_fees") == "true",
        )
        if one("format", "csv") == "json":
            return (
                200,
                {"report": export.report, "csv": export.to_csv(), "planted": [p.to_dict() for p in export.planted]},
                _JSON,
            )
        return 200, export.to_csv(), "text/csv; charset=utf-8"
