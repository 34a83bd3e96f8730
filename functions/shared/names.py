"""The names the running code agrees on with the stack, the local stack and the tools: environment variables,
index names, S3 prefixes and the key formats of stored items and PSP requests (docs/design.md).

Ships with the functions; infra/names.py imports the runtime names from here and keeps only what the stack
needs. Each key format is built by one function below and spelled nowhere else.
"""

from __future__ import annotations

import hashlib

# Environment variables the stack sets on the functions (read by functions/shared/config.py).
ENV_PAYMENT_EVENTS_TABLE = "PAYMENT_EVENTS_TABLE"
ENV_PAYMENT_ORDERS_TABLE = "PAYMENT_ORDERS_TABLE"
ENV_WALLET_TABLE = "WALLET_TABLE"
ENV_LEDGER_TABLE = "LEDGER_TABLE"
ENV_RECON_TABLE = "RECON_TABLE"
ENV_CHARGES_TABLE = "CHARGES_TABLE"
ENV_SELLERS_TABLE = "SELLERS_TABLE"
ENV_PAYOUTS_TABLE = "PAYOUTS_TABLE"
ENV_PAYOUTS_QUEUE_URL = "PAYOUTS_QUEUE_URL"
ENV_PAYOUTS_DLQ_URL = "PAYOUTS_DLQ_URL"
ENV_ORDERS_QUEUE_URL = "ORDERS_QUEUE_URL"
ENV_WORKFLOW_DLQ_URL = "WORKFLOW_DLQ_URL"
ENV_REVIEW_QUEUE_URL = "REVIEW_QUEUE_URL"
ENV_STATE_MACHINE_ARN = "STATE_MACHINE_ARN"
ENV_SETTLEMENT_BUCKET = "SETTLEMENT_BUCKET"
ENV_PSP_API_BASE = "PSP_API_BASE"
ENV_PSP_API_KEY_PARAMETER = "PSP_API_KEY_PARAMETER"
ENV_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
# Only the on-call tool reads these (overrides of the stack's outputs; no function gets them).
ENV_ORDERS_DLQ_URL = "ORDERS_DLQ_URL"
ENV_RECON_QUEUE_URL = "RECON_QUEUE_URL"
ENV_RECON_DLQ_URL = "RECON_DLQ_URL"
ENV_REVIEW_DLQ_URL = "REVIEW_DLQ_URL"

# Global secondary indexes.
SWEEP_INDEX = "sweep"  # on Charges and Payouts: what is not final yet, by shard and deadline
CREATED_INDEX = "created"  # orders by creation hour: reconciliation windows
REFERENCE_INDEX = "psp_reference"  # orders by the PSP's reference: settlement rows without our id
# On Charges, sparse: the offline receipts (issue 17) by the UTC day they were recorded; the bank's deposit file of
# that day is matched against them (functions/recon/bank.py).
RECEIPTS_INDEX = "offline_receipts"
LEDGER_ORDER_INDEX = "payment_order_id"  # ledger transactions that name their order: refunds by order
TRANSFERRED_INDEX = "transferred"  # on Payouts: our transfers by transfer hour (recon's window)
AWAITING_INDEX = "awaiting_account"  # on Payouts: the pay-outs waiting for their seller's connected account
WALLET_STATEMENT_INDEX = "statement"  # on Wallet: a seller's movements by shard and time (statements)

# Settlement bucket prefixes: PSP files land under incoming/<psp>/, recon writes reports/ and quarantine/.
INCOMING_PREFIX = "incoming/"
REPORTS_PREFIX = "reports/"
INTERNAL_REPORTS_PREFIX = f"{REPORTS_PREFIX}internal/"  # internal recon (functions/recon/internal.py)
QUARANTINE_PREFIX = "quarantine/"


def incoming_key(psp: str, name: str) -> str:
    return f"{INCOMING_PREFIX}{psp}/{name}"


def report_key(psp: str, name: str, suffix: str) -> str:
    """A report of the file `name` (suffix `.json`, `.csv`, `.duplicate.json`)."""
    return f"{REPORTS_PREFIX}{psp}/{name}{suffix}"


def quarantine_key(psp: str, name: str) -> str:
    return f"{QUARANTINE_PREFIX}{psp}/{name}"


# The kinds of an order's money-cycle steps: each a wallet movement and a ledger transaction of the same kind.
PAYIN = "payin"
RELEASE = "release"
TRANSFER = "transfer"
MONEY_CYCLE_KINDS = (PAYIN, RELEASE, TRANSFER)
FEE = "fee"  # a PSP fee: a ledger transaction only


def ledger_transaction_id(kind: str, reference: str) -> str:
    """`<kind>#<reference>`: one transaction per kind and reference (an order id or a PSP object id)."""
    return f"{kind}#{reference}"


def ledger_transaction_kind_and_reference(transaction_id: str) -> tuple[str, str]:
    kind, _, reference = transaction_id.partition("#")
    return kind, reference


def movement_key(kind: str, reference: str) -> str:
    """The Wallet partition of one applied movement (its once-only guard), with sort key MOVEMENT_SORT_KEY."""
    return f"MOVE#{kind}#{reference}"


MOVEMENT_SORT_KEY = "MOVE"
BALANCE_SORT_PREFIX = "BALANCE#"


def wallet_shard_key(seller_account: str, shard: int) -> str:
    """The Wallet partition of one of a seller's balance shards (and the statement index's key)."""
    return f"{seller_account}#{shard}"


def balance_sort_key(currency: str) -> str:
    return f"{BALANCE_SORT_PREFIX}{currency}"


# An Adyen card's payment_method on the checkout, its orders and charges: a fingerprint of its encrypted fields,
# which only the charge item keeps (`adyen_payment_method`) until the charge is final (PCI DSS: no security code
# kept after authorisation, even encrypted).
ADYEN_CARD_PREFIX = "adyen_card:"


def charge_key(checkout_id: str, currency: str) -> str:
    """The charge of a checkout in one currency: `<checkout_id>#<CUR>`."""
    return f"{checkout_id}#{currency.upper()}"


def charge_of_key(reference: str) -> tuple[str, str] | None:
    """(checkout_id, currency) of a charge key, None for anything else (a payment_order_id: our ids never hold `#`,
    the API admits letters, digits, `_`, `-` and the client prefix's `~`). The currency is 3 capital letters."""
    checkout_id, separator, currency = reference.rpartition("#")
    if not separator or not checkout_id or len(currency) != 3 \
            or not (currency.isascii() and currency.isalpha() and currency.isupper()):
        return None
    return checkout_id, currency


# The PSP of an order, charge, refund or payout that records none: written before routing recorded it, when every
# online charge was Stripe's (issue 18).
UNRECORDED_PSP = "stripe"


# Checks and money orders (issue 17): their orders' `psp`, so the ledger books their pay-in where the money is (a
# bank deposit, functions/ledger/journal.py) and no PSP's settlement reconciliation expects them.
OFFLINE_PSP = "bank"
# The charge's psp_status while it waits for the funds, once received, and when they never came.
AWAITING_FUNDS, FUNDS_RECEIVED, FUNDS_NOT_RECEIVED = "awaiting_funds", "funds_received", "funds_not_received"
# The reference the buyer writes on the payment, one per charge (checkout and
# currency). Crockford's base32 (no I, L, O, U: nothing to mistake when typed from paper) of the charge key's hash.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_READS = {"O": "0", "I": "1", "L": "1"}
OFFLINE_REFERENCE_PREFIX = "MP-"
OFFLINE_REFERENCE_CHARS = 10  # 50 bits: a collision needs ~2^25 open offline charges


def offline_reference(key: str) -> str:
    """`MP-` and 10 characters (two groups of 5) of the charge key's SHA-256, e.g. `MP-7Q2KD-X9M4T`."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> (64 - 5 * OFFLINE_REFERENCE_CHARS)
    chars = "".join(_CROCKFORD[(number >> (5 * i)) & 31] for i in reversed(range(OFFLINE_REFERENCE_CHARS)))
    return f"{OFFLINE_REFERENCE_PREFIX}{chars[:5]}-{chars[5:]}"


def normal_offline_reference(text: str) -> str:
    """A reference as typed (any case, spaces or dashes anywhere, O for 0, I or L for 1) in its printed form;
    text that cannot be one comes back upper-cased and stripped, so it matches no reference."""
    compact = "".join(char for char in text.upper() if char not in " -\t")
    compact = compact.removeprefix(OFFLINE_REFERENCE_PREFIX.rstrip("-"))
    chars = "".join(_CROCKFORD_READS.get(char, char) for char in compact)
    if len(chars) != OFFLINE_REFERENCE_CHARS or any(char not in _CROCKFORD for char in chars):
        return text.strip().upper()
    return f"{OFFLINE_REFERENCE_PREFIX}{chars[:5]}-{chars[5:]}"


def charge_idempotency_key(checkout_id: str, currency: str, generation: int = 0) -> str:
    """The PSP key of the charge; a generation suffix only after a look-up proved the old key made nothing."""
    base = f"charge:{checkout_id}:{currency.upper()}"
    return f"{base}:g{generation}" if generation else base


def customer_idempotency_key(checkout_id: str) -> str:
    """The PSP key of the Customer a checkout's PaymentMethod is attached to (a checkout in several currencies)."""
    return f"customer:{checkout_id}"


def attach_idempotency_key(checkout_id: str) -> str:
    return f"attach:{checkout_id}"


def transfer_key(payment_order_id: str, generation: int = 0) -> str:
    """The order's Transfer key. A new generation only after Stripe refused the last key's request outright (no
    Transfer exists under it): Stripe replays a stored refusal for 24 h, so a retry after the balance came back or
    the account was fixed needs a fresh key (PayoutsTable.retire_transfer_key)."""
    return f"transfer:{payment_order_id}" + (f":g{generation}" if generation else "")


# The Recon table: pk `FILE#<sha256>` with sk `GUARD` (the once-per-content guard), `RUN` (the run's summary)
# and `DUPLICATE#<delivery>` (each later delivery of the same content); pk `CARRY#<psp>` with sk
# `<payment_order_id>` for orders recorded SUCCESS that no file has settled yet.
FILE_GUARD_SORT_KEY = "GUARD"
FILE_RUN_SORT_KEY = "RUN"


def recon_file_key(sha256: str) -> str:
    return f"FILE#{sha256}"


def duplicate_delivery_sort_key(delivery: str) -> str:
    return f"DUPLICATE#{delivery}"


def carried_orders_key(psp: str) -> str:
    return f"CARRY#{psp}"


# Webhooks in (docs/decisions.md 2026-12-05): the Stripe receiver, its queue, the processor's dedupe table.
ENV_WEBHOOK_EVENTS_TABLE = "WEBHOOK_EVENTS_TABLE"
ENV_WEBHOOK_QUEUE_URL = "WEBHOOK_QUEUE_URL"
ENV_WEBHOOK_SECRET_PARAMETER = "WEBHOOK_SECRET_PARAMETER"
SELLER_ACCOUNT_INDEX = "psp_account_id"  # on Sellers: the sellers of a connected account (Connect webhooks)
WEBHOOK_PATH = "/v1/webhooks/stripe"
# Adyen's standard notifications (issue 18): the same receiver function, queue and processor; each verified item is
# queued as its own event, `adyen.<eventCode>`, deduplicated by ADYEN_EVENT_ID.
ADYEN_WEBHOOK_PATH = "/v1/webhooks/adyen"
ADYEN_EVENT_PREFIX = "adyen."


def adyen_event_id(psp_reference: str, event_code: str, success: str) -> str:
    """One Adyen notification item's event id: Adyen resends an item unchanged until it is accepted, and one
    pspReference may carry several event codes (a refund's REFUND, then its REFUND_FAILED), each once."""
    return f"adyen:{psp_reference}:{event_code}:{success}"


# --- notifications out (issue 16c): status changes delivered, signed, to the storefront's endpoint -----------
ENV_NOTIFICATION_ENDPOINTS_TABLE = "NOTIFICATION_ENDPOINTS_TABLE"
ENV_NOTIFICATIONS_QUEUE_URL = "NOTIFICATIONS_QUEUE_URL"
ENV_NOTIFICATIONS_DLQ_URL = "NOTIFICATIONS_DLQ_URL"
# Headers of every delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` and the event's id.
SIGNATURE_HEADER = "MarketPay-Signature"
EVENT_ID_HEADER = "MarketPay-Event-Id"
# The development key's client (`make run`, tests, chaos) and the owner of everything stored before API keys: its
# ids are stored as sent, another client's as `<client_id>~<id>` (functions/auth/tenancy.py).
DEFAULT_CLIENT_ID = "default"
ENDPOINT_SECRET_PREFIX = "mpsec_"
EVENT_ID_PREFIX = "evt_"


def notification_event_id(source: str, key: str, status: str, version: str) -> str:
    """`evt_<32 hex>`: the same status change of the same item (a stream redelivery) always has the same id."""
    digest = hashlib.sha256(f"{source}|{key}|{status}|{version}".encode()).hexdigest()
    return f"{EVENT_ID_PREFIX}{digest[:32]}"


# -- refunds (issue 16 a) ------------------------------------------------------------------------------------------
ENV_REFUNDS_TABLE = "REFUNDS_TABLE"
ENV_REFUNDS_QUEUE_URL = "REFUNDS_QUEUE_URL"
ENV_REFUNDS_DLQ_URL = "REFUNDS_DLQ_URL"

# The kinds of a refund's money steps: each a wallet movement and a ledger transaction of the same kind, under
# the refund's id (REFUND, REVERSAL) or the order whose transfer nets what its seller owes (NETTING).
REFUND = "refund"  # the refund's money leaves the order's share (pending, available, or into `owed`)
REVERSAL = "reversal"  # a transfer reversal took the seller's share back: `owed` shrinks
NETTING = "netting"  # what a seller owes, kept back from the next transfer of one of its orders
REFUND_KINDS = (REFUND, REVERSAL, NETTING)


def refund_idempotency_key(refund_id: str) -> str:
    """The PSP key of our refund's one Refund."""
    return f"refund:{refund_id}"


def reversal_idempotency_key(refund_id: str) -> str:
    """The PSP key of the transfer reversal that takes a refund's seller share back."""
    return f"reversal:{refund_id}"


def owed_shard_reference(seller_account: str) -> str:
    """What picks the one wallet shard that holds a seller's `owed` bucket (every owed movement lands there, so
    netting reads and takes it from one item)."""
    return f"owed#{seller_account}"


# -- disputes (issue 16: chargebacks) --------------------------------------------------------------------------
ENV_DISPUTES_TABLE = "DISPUTES_TABLE"
# The kinds of a dispute's money steps (docs/decisions.md "Disputes"), each once: the fee under the dispute id,
# the others under dispute_part_reference (one part per order the disputed amount is attributed to).
DISPUTE = "dispute"  # opened: the part leaves our PSP balance; the seller's share held or, transferred, owed
DISPUTE_FEE = "dispute_fee"  # the PSP's dispute fee: an expense, kept by the PSP whatever the outcome
DISPUTE_WON = "dispute_won"  # reinstated: the part returns to our PSP balance, the hold lifted or the owed given back
DISPUTE_LOST = "dispute_lost"  # closed lost: the held share is gone (the seller's), the commission share ours
DISPUTE_KINDS = (DISPUTE, DISPUTE_FEE, DISPUTE_WON, DISPUTE_LOST)


def dispute_part_reference(dispute_id: str, payment_order_id: str) -> str:
    """The reference of one order's part of a dispute (its wallet movement and ledger transactions)."""
    return f"{dispute_id}:{payment_order_id}"


# -- API keys (issue 21): one key per storefront client, only its SHA-256 stored ---------------------------------
ENV_API_KEYS_TABLE = "API_KEYS_TABLE"
API_KEY_PREFIXES = {"test": "mk_test_", "live": "mk_live_"}
# What a key may do. Each route of the API needs one scope (functions/auth/scopes.py); a key holds a set.
SCOPES = ("payments:write", "payments:read", "refunds", "releases", "sellers", "webhooks", "offline_payments:write")
# Operator scopes: a key gets them only when asked for by name (`ops keys create --scopes ...`), never by default.
# offline_payments:write records (and bounces) a check or money order's funds: the platform's back office, not a shop.
OPERATOR_SCOPES = ("offline_payments:write",)
DEFAULT_SCOPES = tuple(scope for scope in SCOPES if scope not in OPERATOR_SCOPES)
# What the authorizer hands the API function (requestContext.authorizer.lambda): who is calling, with what.
AUTH_CLIENT_ID = "client_id"
AUTH_SCOPES = "scopes"  # space-separated
AUTH_KEY_ID = "key_id"  # the key's first characters: names it in logs without revealing it
AUTH_ERROR = "error"  # why no client: missing_api_key, invalid_api_key, revoked_api_key
# Per-client rate limits: one counter item per client and second in ApiRateWindows, expiring (TTL) a minute later.
ENV_API_RATE_TABLE = "API_RATE_WINDOWS_TABLE"
# One item per PSP: its circuit breaker (functions/shared/breaker.py), shared by every function that calls it.
ENV_PSP_HEALTH_TABLE = "PSP_HEALTH_TABLE"
API_RATE_TTL_ATTRIBUTE = "expires_at"
AUTH_RETRY_AFTER = "retry_after"  # with AUTH_ERROR rate_limited: whole seconds to wait
AUTH_RATE_LIMIT = "rate_limit"  # the key's requests per second ("" = the default)


def rate_window_key(client_id: str, second: int) -> str:
    return f"{client_id}#{second}"

# The Stripe event types functions/webhooks/registry.py handles: the webhook endpoint is registered for these only
# (an event nobody handles would cost a receiver call, a queue message and two dedupe writes to be ignored).
WEBHOOK_EVENT_TYPES = (
    "account.updated", "charge.dispute.closed", "charge.dispute.created", "charge.dispute.funds_reinstated",
    "charge.dispute.funds_withdrawn", "charge.dispute.updated", "charge.refund.updated", "charge.refunded",
    "payment_intent.canceled", "payment_intent.payment_failed", "payment_intent.processing",
    "payment_intent.requires_action", "payment_intent.succeeded", "payout.failed", "payout.paid", "refund.created",
    "refund.failed", "refund.updated", "transfer.reversed",
)
