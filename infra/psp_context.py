"""The PSP settings a deployment chooses (CDK context): the routing rules and Adyen's account.

Checked at synthesis by the functions' own settings model (functions/shared/config.py): a routing that cannot be
read, a rule naming Adyen without a merchant account, `live` without its URL prefix would stop the cold start of
every function given them, Stripe's charges included; here they stop the synthesis instead, before any deploy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from infra import names

# Lambda allows 4 KB of environment variables per function, all of them together; PaymentApi's others (table and
# queue names, log settings) take about 1.5 KB once resolved. Longer rules (long seller lists) need another home.
MAX_ROUTING_CHARS = 2000


class PspContextError(ValueError):
    """The context's PSP settings would stop the functions' cold start: the synthesis stops."""


@dataclass(frozen=True)
class PspSettings:
    routing: str = ""
    adyen_key_parameter: str = names.DEFAULT_ADYEN_KEY_PARAMETER
    adyen_merchant_account: str = ""
    adyen_environment: str = names.DEFAULT_ADYEN_ENVIRONMENT
    adyen_live_prefix: str = ""
    adyen_hmac_key_parameter: str = names.DEFAULT_ADYEN_HMAC_KEY_PARAMETER

    def executor_env(self) -> dict[str, str]:
        """What a function that calls Adyen's Checkout API is given: the Executor (charges) and the Refund worker
        (refunds). The key is read from SSM at the first Adyen call."""
        return {
            names.ENV_ADYEN_KEY_PARAMETER: self.adyen_key_parameter,
            names.ENV_ADYEN_MERCHANT_ACCOUNT: self.adyen_merchant_account,
            names.ENV_ADYEN_ENVIRONMENT: self.adyen_environment,
            names.ENV_ADYEN_LIVE_PREFIX: self.adyen_live_prefix,
            names.ENV_ADYEN_CHECKOUT_BASE: "",  # the environment's own URL; the local stack puts its sandbox's here
        }

    def router_env(self) -> dict[str, str]:
        """What a function that routes (PaymentApi) needs: the rules, and the two Adyen names its settings check
        against a rule naming Adyen (functions/shared/config.py `_routing_is_readable`). The parameter's name only:
        such a function has no grant on it and never reads it."""
        return {
            names.ENV_PSP_ROUTING: self.routing,
            names.ENV_ADYEN_MERCHANT_ACCOUNT: self.adyen_merchant_account,
            names.ENV_ADYEN_KEY_PARAMETER: self.adyen_key_parameter,
        }

    def receiver_env(self) -> dict[str, str]:
        """What the notification receiver verifies Adyen's notifications with: the HMAC key's parameter (read from
        SSM, granted to it alone) and our merchant account (an item for another account is dropped)."""
        return {
            names.ENV_ADYEN_HMAC_KEY_PARAMETER: self.adyen_hmac_key_parameter,
            names.ENV_ADYEN_MERCHANT_ACCOUNT: self.adyen_merchant_account,
        }

    def check(self) -> PspSettings:
        """Raise PspContextError where the functions' settings would refuse these values at cold start."""
        from functions.shared.config import Settings  # the same model the functions validate with

        if len(self.routing) > MAX_ROUTING_CHARS:
            raise PspContextError(f"{names.CTX_PSP_ROUTING} is {len(self.routing)} characters: at most "
                                  f"{MAX_ROUTING_CHARS} fit in a function's environment")
        for name, parameter in ((names.CTX_ADYEN_KEY_PARAMETER, self.adyen_key_parameter),
                                (names.CTX_ADYEN_HMAC_KEY_PARAMETER, self.adyen_hmac_key_parameter)):
            if not parameter.startswith("/"):
                raise PspContextError(f"{name} must be an SSM parameter path (/...)")
        tables = {field: "t" for field, info in Settings.model_fields.items() if info.is_required()}
        try:
            Settings.model_validate({**tables, **{key.lower(): value for key, value in
                                                  {**self.executor_env(), **self.router_env(),
                                                   **self.receiver_env()}.items()}})
        except ValidationError as error:
            problems = "; ".join(e["msg"] for e in error.errors())
            raise PspContextError(f"the PSP context would stop the functions' cold start: {problems}") from None
        return self


def _text(value: Any) -> str:
    """A context value as text: `-c key=value` gives a string, CDK_CONTEXT_JSON may give an object (the rules)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value).strip()


def from_context(context: Any) -> PspSettings:
    """The PSP settings of the app's context (`app.node.try_get_context`), defaults from infra/names.py; checked."""
    return PspSettings(
        routing=_text(context(names.CTX_PSP_ROUTING)),
        adyen_key_parameter=_text(context(names.CTX_ADYEN_KEY_PARAMETER)) or names.DEFAULT_ADYEN_KEY_PARAMETER,
        adyen_merchant_account=_text(context(names.CTX_ADYEN_MERCHANT_ACCOUNT)),
        adyen_environment=_text(context(names.CTX_ADYEN_ENVIRONMENT)) or names.DEFAULT_ADYEN_ENVIRONMENT,
        adyen_live_prefix=_text(context(names.CTX_ADYEN_LIVE_PREFIX)),
        adyen_hmac_key_parameter=_text(context(names.CTX_ADYEN_HMAC_KEY_PARAMETER))
        or names.DEFAULT_ADYEN_HMAC_KEY_PARAMETER,
    ).check()
