"""The Stripe `/v1` endpoints: parse and check parameters, call the state, shape JSON (lists, search, expand)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import errors
from .amounts import check_charge_amount
from .card_input import parse_card
from .catalogue import (
    ACH_ACCOUNTS,
    ACH_KIND,
    PAYPAL,
    PAYPAL_KIND,
    SEPA_IBANS,
    SEPA_KIND,
    TestCard,
    iban_valid,
    routing_number_valid,
)
from .models import CURRENCIES, PaymentIntent
from .state import SandboxState

_COMMON = frozenset({"expand"})


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None


class Params:
    """Typed access to form parameters; unknown parameters are refused like Stripe does."""

    def __init__(self, params: dict[str, Any], allowed: frozenset[str]) -> None:
        for name in params:
            if name not in allowed and name not in _COMMON:
                raise errors.invalid_request(
                    f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
                )
        self._params = params

    def str(self, name: str, *, required: bool = False) -> str | None:
        value = self._params.get(name)
        if value is None or value == "":
            if required:
                raise errors.missing_param(name)
            return None
        if not isinstance(value, str):
            raise errors.invalid_request(f"Invalid string: {name}", param=name, code="parameter_invalid_string")
        return value

    def int(self, name: str, *, required: bool = False, minimum: int = 1) -> int | None:
        value = self.str(name, required=required)
        if value is None:
            return None
        if not re.fullmatch(r"-?[0-9]{1,18}", value):
            raise errors.invalid_request(f"Invalid integer: {value}", param=name, code="parameter_invalid_integer")
        number = int(value)
        if number < minimum:
            raise errors.invalid_request(
                f"This value must be greater than or equal to {minimum}.",
                param=name,
                code="parameter_invalid_integer",
            )
        return number

    def bool(self, name: str) -> bool:
        value = self.str(name)
        if value is None:
            return False
        if value not in ("true", "false"):
            raise errors.invalid_request(f"Invalid boolean: {value}", param=name)
        return value == "true"

    def currency(self) -> str:
        value = (self.str("currency", required=True) or "").lower()
        if value not in CURRENCIES:
            raise errors.invalid_request(f"Invalid currency: {value}.", param="currency", code="invalid_currency")
        return value

    def metadata(self) -> dict[str, str]:
        value = self._params.get("metadata", {})
        if value == "":
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise errors.invalid_request("Invalid metadata: must be a hash of strings", param="metadata")
        if len(value) > 50 or any(len(k) > 40 or len(v) > 500 for k, v in value.items()):
            raise errors.invalid_request("Metadata: at most 50 keys of 40 characters, values of 500", param="metadata")
        return {k: v for k, v in value.items() if v != ""}

    def list_of_str(self, name: str) -> list[str] | None:
        value = self._params.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise errors.invalid_request(f"Invalid array: {name}", param=name)
        return value

    def hash(self, name: str) -> dict[str, Any] | None:
        value = self._params.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise errors.invalid_request(f"Invalid hash: {name}", param=name)
        return value


_PI_CREATE = frozenset(
    {
        "amount",
        "currency",
        "metadata",
        "payment_method",
        "payment_method_types",
        "automatic_payment_methods",
        "confirm",
        "description",
        "customer",
        "transfer_group",
        "capture_method",
        "confirmation_method",
        "return_url",
        "off_session",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "error_on_requires_action",
        "payment_method_options",
        "on_behalf_of",
        "setup_future_usage",
        "use_stripe_sdk",
        "mandate_data",
    }
)
_PI_CONFIRM = frozenset(
    {
        "payment_method",
        "return_url",
        "off_session",
        "error_on_requires_action",
        "payment_method_options",
        "receipt_email",
        "setup_future_usage",
        "use_stripe_sdk",
        "mandate_data",
    }
)
_LIST = frozenset({"limit", "starting_after", "ending_before", "created"})
_ACCOUNT_CREATE = frozenset(
    {
        "type",
        "country",
        "email",
        "capabilities",
        "business_type",
        "business_profile",
        "default_currency",
        "metadata",
        "controller",
        "tos_acceptance",
        "settings",
    }
)
# What Stripe.js adds to `POST /v1/payment_methods` besides the card (`key` is the publishable key).
_STRIPE_JS = frozenset(
    {"key", "payment_user_agent", "time_on_page", "guid", "muid", "sid", "referrer", "pasted_fields"}
)
_PM_CREATE = frozenset({"type", "card", "billing_details", "metadata", "allow_redisplay", SEPA_KIND,
                        ACH_KIND}) | _STRIPE_JS
_BILLING_DETAILS = frozenset({"address", "email", "name", "phone"})


class StripeApi:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        s = state
        get, post = "GET", "POST"
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., dict[str, Any]]]] = [
            (post, re.compile(r"/v1/payment_methods"), self.create_payment_method),
            (get, re.compile(r"/v1/payment_methods"), self._lister(s.payment_methods, "payment_methods", {"customer"})),
            (get, re.compile(r"/v1/payment_methods/(?P<id>[^/]+)"), self._getter(s.payment_method)),
            (post, re.compile(r"/v1/payment_methods/(?P<id>[^/]+)/attach"), self.attach_payment_method),
            (post, re.compile(r"/v1/payment_methods/(?P<id>[^/]+)/detach"), self.detach_payment_method),
            (post, re.compile(r"/v1/customers"), self.create_customer),
            (get, re.compile(r"/v1/customers"), self._lister(s.customers, "customers", {"email"})),
            (get, re.compile(r"/v1/customers/(?P<id>[^/]+)"), self._getter(s.customer)),
            (post, re.compile(r"/v1/payment_intents"), self.create_payment_intent),
            (get, re.compile(r"/v1/payment_intents"), self._lister(s.payment_intents, "payment_intents", {"customer"})),
            (get, re.compile(r"/v1/payment_intents/search"), self.search_payment_intents),
            (get, re.compile(r"/v1/payment_intents/(?P<id>[^/]+)"), self._getter(s.payment_intent)),
            (post, re.compile(r"/v1/payment_intents/(?P<id>[^/]+)"), self.update_payment_intent),
            (post, re.compile(r"/v1/payment_intents/(?P<id>[^/]+)/confirm"), self.confirm_payment_intent),
            (post, re.compile(r"/v1/payment_intents/(?P<id>[^/]+)/cancel"), self.cancel_payment_intent),
            (
                get,
                re.compile(r"/v1/charges"),
                self._lister(s.charges, "charges", {"payment_intent", "transfer_group", "customer"}),
            ),
            (get, re.compile(r"/v1/charges/(?P<id>[^/]+)"), self._getter(s.charge)),
            (post, re.compile(r"/v1/refunds"), self.create_refund),
            (get, re.compile(r"/v1/refunds"), self._lister(s.refunds, "refunds", {"payment_intent", "charge"})),
            (get, re.compile(r"/v1/refunds/(?P<id>[^/]+)"), self._getter(s.refund)),
            (post, re.compile(r"/v1/accounts"), self.create_account),
            (get, re.compile(r"/v1/accounts"), self._lister(s.accounts, "accounts", set())),
            (get, re.compile(r"/v1/accounts/(?P<id>[^/]+)"), self._getter(s.account)),
            (post, re.compile(r"/v1/transfers"), self.create_transfer),
            (
                get,
                re.compile(r"/v1/transfers"),
                self._lister(s.transfers, "transfers", {"destination", "transfer_group"}),
            ),
            (get, re.compile(r"/v1/transfers/(?P<id>[^/]+)"), self._getter(s.transfer)),
            (post, re.compile(r"/v1/transfers/(?P<id>[^/]+)/reversals"), self.create_transfer_reversal),
            (get, re.compile(r"/v1/transfers/(?P<id>[^/]+)/reversals"), self.list_transfer_reversals),
            (get, re.compile(r"/v1/transfers/(?P<id>[^/]+)/reversals/(?P<reversal>[^/]+)"), self.transfer_reversal),
            (
                get,
                re.compile(r"/v1/balance_transactions"),
                self._lister(s.balance_transactions, "balance_transactions", {"source", "type", "currency"}),
            ),
            (get, re.compile(r"/v1/balance_transactions/(?P<id>[^/]+)"), self._getter(s.balance_transaction)),
            (get, re.compile(r"/v1/balance"), self.balance),
            (get, re.compile(r"/v1/disputes"), self._lister(s.disputes, "disputes", {"charge", "payment_intent"})),
            (get, re.compile(r"/v1/disputes/(?P<id>[^/]+)"), self._getter(s.dispute)),
        ]

    def handle(self, request: ApiRequest) -> dict[str, Any]:
        known_path = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match:
                known_path = True
                if method == request.method:
                    result = handler(request, **match.groupdict())
                    return self._expand(result, request.params.get("expand"))
        raise errors.StripeApiError(
            404 if not known_path else 405,
            "invalid_request_error",
            f"Unrecognized request URL ({request.method}: {request.path}).",
            stored=False,
        )

    # ---- PaymentMethods and Customers ---------------------------------------------------------------------

    def create_payment_method(self, request: ApiRequest) -> dict[str, Any]:
        """What Stripe.js does: `type=card` with `card[number]`... or `card[token]=tok_visa`; `type=paypal`."""
        p = Params(request.params, _PM_CREATE)
        kind = p.str("type", required=True)
        if kind not in ("card", PAYPAL_KIND, SEPA_KIND, ACH_KIND):
            raise errors.invalid_request(f"The sandbox supports type card, paypal, sepa_debit and us_bank_account, "
                                         f"not {kind!r}.", param="type")
        billing = p.hash("billing_details") or {}
        Params(billing, _BILLING_DETAILS)
        if kind != "card":
            for other in {"card", PAYPAL_KIND, SEPA_KIND, ACH_KIND} - {kind}:
                if other in request.params:
                    raise errors.invalid_request(f"Received unknown parameter: {other}", param=other)
            method = PAYPAL if kind == PAYPAL_KIND else self._bank_account(kind, request.params.get(kind), billing)
            pm = self.state.create_payment_method(card=method, exp_month=None, exp_year=None, metadata=p.metadata(),
                                                  billing_details={k: v for k, v in billing.items() if k != "address"})
            return self.state.to_json(pm)
        today = self.state.clock.today()
        given = parse_card(request.params.get("card"), year=today.year, month=today.month)
        pm = self.state.create_payment_method(
            card=given.card,
            exp_month=given.exp_month,
            exp_year=given.exp_year,
            metadata=p.metadata(),
            billing_details={k: v for k, v in billing.items() if k != "address"},
        )
        return self.state.to_json(pm)

    @staticmethod
    def _bank_account(kind: str, details: Any, billing: dict[str, Any]) -> TestCard:
        """The test bank account behind sepa_debit[iban] or us_bank_account[routing_number, account_number]; Stripe
        requires the holder's name for both, and for SEPA their email."""
        if not billing.get("name"):
            raise errors.invalid_request("Missing required param: billing_details[name].",
                                         param="billing_details[name]", code="parameter_missing")
        if kind == SEPA_KIND and not billing.get("email"):  # SEPA mandates name the account holder's email
            raise errors.invalid_request("Missing required param: billing_details[email].",
                                         param="billing_details[email]", code="parameter_missing")
        if not isinstance(details, dict):
            raise errors.invalid_request(f"Missing required param: {kind}.", param=kind, code="parameter_missing")
        if kind == SEPA_KIND:
            Params(details, frozenset({"iban"}))
            iban = str(details.get("iban", "")).replace(" ", "").upper()
            if not iban_valid(iban):
                raise errors.invalid_request("The IBAN you provided is invalid.", param="sepa_debit[iban]",
                                             code="invalid_bank_account_iban")
            if iban not in SEPA_IBANS:
                raise errors.invalid_request("The sandbox knows only Stripe's test IBANs (docs.stripe.com/testing).",
                                             param="sepa_debit[iban]")
            return SEPA_IBANS[iban]
        Params(details, frozenset({"routing_number", "account_number", "account_holder_type", "account_type"}))
        routing, account = str(details.get("routing_number", "")), str(details.get("account_number", ""))
        if not routing_number_valid(routing):
            raise errors.invalid_request("Routing number must have 9 digits and a valid check digit.",
                                         param="us_bank_account[routing_number]", code="routing_number_invalid")
        if details.get("account_holder_type") not in (None, "individual", "company"):
            raise errors.invalid_request("Invalid account_holder_type.", param="us_bank_account[account_holder_type]")
        if account not in ACH_ACCOUNTS or routing != "110000000":
            raise errors.invalid_request("The sandbox knows only Stripe's test bank accounts (routing 110000000).",
                                         param="us_bank_account[account_number]")
        return ACH_ACCOUNTS[account]

    def attach_payment_method(self, request: ApiRequest, id: str) -> dict[str, Any]:
        customer = Params(request.params, frozenset({"customer"})).str("customer", required=True)
        assert customer is not None
        return self.state.to_json(self.state.attach_payment_method(id, customer))

    def detach_payment_method(self, request: ApiRequest, id: str) -> dict[str, Any]:
        Params(request.params, frozenset())
        return self.state.to_json(self.state.detach_payment_method(id))

    def create_customer(self, request: ApiRequest) -> dict[str, Any]:
        p = Params(request.params, frozenset({"email", "name", "description", "metadata", "payment_method", "phone"}))
        customer = self.state.create_customer(
            email=p.str("email"),
            name=p.str("name"),
            description=p.str("description"),
            metadata=p.metadata(),
            payment_method=p.str("payment_method"),
        )
        return self.state.to_json(customer)

    # ---- PaymentIntents ---------------------------------------------------------------------------------

    def create_payment_intent(self, request: ApiRequest) -> dict[str, Any]:
        p = Params(request.params, _PI_CREATE)
        amount = p.int("amount", required=True)
        currency = p.currency()
        assert amount is not None
        check_charge_amount(amount, currency)
        capture = p.str("capture_method") or "automatic"
        if capture not in ("automatic", "automatic_async"):
            raise errors.invalid_request("The sandbox only supports automatic capture.", param="capture_method")
        automatic = p.hash("automatic_payment_methods")
        types = p.list_of_str("payment_method_types")
        if automatic is not None and types is not None:
            raise errors.invalid_request(
                "You may only specify one of these parameters: automatic_payment_methods, payment_method_types.",
                param="automatic_payment_methods",
            )
        if automatic is not None:
            automatic = {k: (v == "true") if v in ("true", "false") else v for k, v in automatic.items()}
        pi = self.state.create_payment_intent(
            amount=amount,
            currency=currency,
            metadata=p.metadata(),
            payment_method=p.str("payment_method"),
            payment_method_types=types or ["card"],
            automatic_payment_methods=automatic,
            description=p.str("description"),
            customer=p.str("customer"),
            transfer_group=p.str("transfer_group"),
            confirm=p.bool("confirm"),
            idempotency_key=request.idempotency_key,
            return_url=p.str("return_url"),
            mandate_data=p.hash("mandate_data"),
        )
        return self.state.to_json(pi)

    def update_payment_intent(self, request: ApiRequest, id: str) -> dict[str, Any]:
        p = Params(request.params, frozenset({"metadata", "description"}))
        with self.state.lock:
            pi = self.state.payment_intent(id)
            if "metadata" in request.params:
                merged = {**pi.metadata, **(request.params["metadata"] or {})}
                pi.metadata = Params({"metadata": merged}, frozenset({"metadata"})).metadata()
            if "description" in request.params:
                pi.description = p.str("description")
            return self.state.to_json(pi)

    def confirm_payment_intent(self, request: ApiRequest, id: str) -> dict[str, Any]:
        p = Params(request.params, _PI_CONFIRM)
        pi = self.state.confirm_payment_intent(
            id, payment_method=p.str("payment_method"), idempotency_key=request.idempotency_key,
            return_url=p.str("return_url"), mandate_data=p.hash("mandate_data"),
        )
        return self.state.to_json(pi)

    def cancel_payment_intent(self, request: ApiRequest, id: str) -> dict[str, Any]:
        p = Params(request.params, frozenset({"cancellation_reason"}))
        reason = p.str("cancellation_reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"):
            raise errors.invalid_request(f"Invalid cancellation_reason: {reason}", param="cancellation_reason")
        return self.state.to_json(self.state.cancel_payment_intent(id, reason=reason))

    def search_payment_intents(self, request: ApiRequest) -> dict[str, Any]:
        p = Params(request.params, frozenset({"query", "limit", "page"}))
        test = parse_search(p.str("query", required=True) or "")
        limit = p.int("limit") or 10
        found = self.state.select(self.state.payment_intents, test)
        page = int(p.str("page") or 0)
        data = found[page : page + min(limit, 100)]
        has_more = page + len(data) < len(found)
        return {
            "object": "search_result",
            "data": [self.state.to_json(pi) for pi in data],
            "has_more": has_more,
            "next_page": str(page + len(data)) if has_more else None,
            "total_count": len(found),
            "url": "/v1/payment_intents/search",
        }

    # ---- Refunds, transfers, balance ---------------------------------------------------------------------

    def create_refund(self, request: ApiRequest) -> dict[str, Any]:
        p = Params(request.params, frozenset({"payment_intent", "charge", "amount", "reason", "metadata"}))
        reason = p.str("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise errors.invalid_request(f"Invalid reason: {reason}", param="reason")
        refund = self.state.create_refund(
            payment_intent=p.str("payment_intent"),
            charge=p.str("charge"),
            amount=p.int("amount"),
            reason=reason,
            metadata=p.metadata(),
            idempotency_key=request.idempotency_key,
        )
        return self.state.to_json(refund)

    def create_transfer(self, request: ApiRequest) -> dict[str, Any]:
        p = Params(
            request.params,
            frozenset(
                {"amount", "currency", "destination", "metadata", "description", "transfer_group", "source_transaction"}
            ),
        )
        amount = p.int("amount", required=True)
        currency = p.currency()
        destination = p.str("destination", required=True)
        assert amount is not None and destination is not None
        transfer = self.state.create_transfer(
            amount=amount,
            currency=currency,
            destination=destination,
            metadata=p.metadata(),
            description=p.str("description"),
            transfer_group=p.str("transfer_group"),
            source_transaction=p.str("source_transaction"),
            idempotency_key=request.idempotency_key,
        )
        return self.state.to_json(transfer)

    def create_transfer_reversal(self, request: ApiRequest, id: str) -> dict[str, Any]:
        p = Params(request.params, frozenset({"amount", "description", "metadata", "refund_application_fee"}))
        reversal = self.state.create_transfer_reversal(
            id, amount=p.int("amount"), description=p.str("description"), metadata=p.metadata()
        )
        return self.state.to_json(reversal)

    def list_transfer_reversals(self, request: ApiRequest, id: str) -> dict[str, Any]:
        with self.state.lock:
            reversals = list(reversed(self.state.transfer(id).reversals))
        return self._page(request, reversals, f"transfers/{id}/reversals", frozenset())

    def transfer_reversal(self, request: ApiRequest, id: str, reversal: str) -> dict[str, Any]:
        Params(request.params, frozenset())
        return self.state.to_json(self.state.transfer_reversal(id, reversal))

    def balance(self, request: ApiRequest) -> dict[str, Any]:
        Params(request.params, frozenset())
        available, pending = self.state.platform_balance()
        return {
            "object": "balance",
            "available": [{"amount": a, "currency": c} for c, a in sorted(available.items())],
            "pending": [{"amount": a, "currency": c} for c, a in sorted(pending.items())],
            "livemode": False,
        }

    # ---- Connected accounts ------------------------------------------------------------------------------

    def create_account(self, request: ApiRequest) -> dict[str, Any]:
        p = Params(request.params, _ACCOUNT_CREATE)
        kind = p.str("type", required=True)
        if kind not in ("express", "custom", "standard"):
            raise errors.invalid_request(
                f"Invalid type: must be one of custom, express, or standard ({kind!r} given).", param="type"
            )
        country = (p.str("country") or "US").upper()
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise errors.invalid_request(f"Country '{country}' is unknown.", param="country")
        requested = []
        for name, wish in (p.hash("capabilities") or {}).items():
            if not isinstance(wish, dict) or set(wish) - {"requested"}:
                raise errors.invalid_request(f"Invalid hash: capabilities[{name}]", param=f"capabilities[{name}]")
            if wish.get("requested") == "true":
                requested.append(name)
        if kind != "standard" and not requested:
            # Stripe asks Express and Custom accounts to request their capabilities; the wording is the sandbox's.
            raise errors.invalid_request(
                f"Creating a {kind} account requires at least one capability: pass "
                "capabilities[transfers][requested]=true.",
                param="capabilities",
            )
        default_currency = p.str("default_currency")
        if default_currency is not None and default_currency.lower() not in CURRENCIES:
            raise errors.invalid_request(f"Invalid currency: {default_currency}.", param="default_currency")
        account = self.state.create_account(
            type=kind,
            country=country,
            email=p.str("email"),
            capabilities=requested or ["transfers", "card_payments"],
            business_type=p.str("business_type"),
            default_currency=default_currency.lower() if default_currency else None,
            metadata=p.metadata(),
        )
        return self.state.to_json(account)

    # ---- generic retrieve / list / expand -------------------------------------------------------------------

    def _getter(self, lookup: Callable[[str], Any]) -> Callable[..., dict[str, Any]]:
        def retrieve(request: ApiRequest, id: str) -> dict[str, Any]:
            Params(request.params, frozenset())
            return self.state.to_json(lookup(id))

        return retrieve

    def _lister(self, store: dict[str, Any], name: str, filters: set[str]) -> Callable[..., dict[str, Any]]:
        def list_objects(request: ApiRequest) -> dict[str, Any]:
            p = Params(request.params, _LIST | filters)
            wanted = {f: p.str(f) for f in filters if p.str(f) is not None}
            objects = self.state.select(store, lambda o: all(getattr(o, f) == v for f, v in wanted.items()))
            return self._page(request, objects, name, filters)

        return list_objects

    def _page(
        self, request: ApiRequest, objects: list[Any], name: str, filters: set[str] | frozenset[str]
    ) -> dict[str, Any]:
        """One page of `objects` (newest first): `limit` (at most 100), `starting_after`, `ending_before`."""
        p = Params(request.params, _LIST | filters)
        limit = min(p.int("limit") or 10, 100)
        ids = [o.id for o in objects]
        start, end = 0, len(objects)
        if after := p.str("starting_after"):
            start = ids.index(after) + 1 if after in ids else self._missing(name, after, "starting_after")
        if before := p.str("ending_before"):
            end = ids.index(before) if before in ids else self._missing(name, before, "ending_before")
            start = max(start, end - limit)
        page = objects[start : min(end, start + limit)]
        return {
            "object": "list",
            "data": [self.state.to_json(o) for o in page],
            "has_more": start + len(page) < end,
            "url": f"/v1/{name}",
        }

    @staticmethod
    def _missing(name: str, object_id: str, param: str) -> int:
        raise errors.no_such(name.rsplit("/", 1)[-1].rstrip("s"), object_id, param=param, status=400)

    def _expand(self, result: dict[str, Any], expand: Any) -> dict[str, Any]:
        if not expand:
            return result
        paths = expand if isinstance(expand, list) else [expand]
        for path in paths:
            self._expand_path(result, str(path).split("."))
        return result

    def _expand_path(self, obj: Any, parts: list[str]) -> None:
        if not parts or not isinstance(obj, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(obj.get("data"), list):
            for item in obj["data"]:
                self._expand_path(item, rest)
            return
        value = obj.get(head)
        if rest:
            self._expand_path(value, rest)
            return
        if isinstance(value, str) and (found := self.state.find(value)) is not None:
            obj[head] = self.state.to_json(found)

    # ---- webhooks (psp_sandbox/webhooks.py) ------------------------------------------------------------------

    def add_webhooks(self, webhooks: Any) -> None:
        """Serve `/v1/webhook_endpoints` and `/v1/events` from `webhooks` (a webhooks.Webhooks)."""

        def create(request: ApiRequest) -> dict[str, Any]:
            return webhooks.create_endpoint(request.params)

        def delete(request: ApiRequest, id: str) -> dict[str, Any]:
            Params(request.params, frozenset())
            return webhooks.delete_endpoint(id)

        get, post = "GET", "POST"
        self._routes += [
            (post, re.compile(r"/v1/webhook_endpoints"), create),
            (get, re.compile(r"/v1/webhook_endpoints"), self._lister(webhooks.endpoints, "webhook_endpoints", set())),
            (get, re.compile(r"/v1/webhook_endpoints/(?P<id>[^/]+)"), self._getter(webhooks.endpoint)),
            ("DELETE", re.compile(r"/v1/webhook_endpoints/(?P<id>[^/]+)"), delete),
            (get, re.compile(r"/v1/events"), self._lister(webhooks.events, "events", {"type"})),
            (get, re.compile(r"/v1/events/(?P<id>[^/]+)"), self._getter(webhooks.event)),
        ]


_CLAUSE = re.compile(
    r"""^\s*(?P<field>metadata\[['"](?P<key>[^'"]+)['"]\]|[a-z_]+)\s*:\s*(?:'(?P<q>[^']*)'|"(?P<dq>[^"]*)"|(?P<bare>\S+))\s*$"""
)
_SEARCHABLE = frozenset({"status", "currency", "amount", "customer"})


def parse_search(query: str) -> Callable[[PaymentIntent], bool]:
    """Stripe search syntax, the subset that matters here: `field:'value'` clauses joined by AND or by OR, with
    fields metadata['key'], status, currency, amount, customer."""
    if " AND " in query and " OR " in query:
        raise errors.invalid_request("Search queries cannot mix AND and OR.", param="query")
    joiner = " OR " if " OR " in query else " AND "
    tests = []
    for clause in query.split(joiner):
        match = _CLAUSE.match(clause)
        if not match:
            raise errors.invalid_request(f"Invalid search query clause: {clause.strip()!r}", param="query")
        value = next(v for v in (match["q"], match["dq"], match["bare"]) if v is not None)
        if match["key"] is not None:
            tests.append(lambda pi, k=match["key"], v=value: pi.metadata.get(k) == v)
        elif match["field"] in _SEARCHABLE:
            tests.append(lambda pi, f=match["field"], v=value: str(getattr(pi, f)) == v)
        else:
            raise errors.invalid_request(f"Field {match['field']!r} is not searchable.", param="query")
    combine = any if joiner == " OR " else all
    return lambda pi: combine(test(pi) for test in tests)
