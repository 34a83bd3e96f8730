"""LocalStack: the deployed topology on one machine (moto + in-process Lambdas + gateway + PSP sandboxes)."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3

from functions.auth.keys import issue as issue_key
from functions.shared.names import (
    ADYEN_WEBHOOK_PATH,
    DEFAULT_CLIENT_ID,
    ENV_API_KEYS_TABLE,
    SCOPES,
    WEBHOOK_EVENT_TYPES,
    WEBHOOK_PATH,
)
from functions.shared.tables import ApiKeysTable
from local.deploy import DeployedStack, deploy
from local.event_sources import EventSources, schedule_targets, sqs_mappings
from local.gateway import Gateway, http_api_routes
from local.lambda_runtime import LambdaRuntime, SavedEnvironment
from local.lifecycle import check_ports_free
from local.moto_server import AWS_ENV, HOST, REGION, MotoServer, start_moto
from local.permissions import Call, Roles
from local.streams import stream_mappings

log = logging.getLogger("local.stack")

REPO_ROOT = Path(__file__).resolve().parent.parent
PSP_TEST_KEY = "sk_test_local"
PSP_API_BASE = "PSP_API_BASE"  # the template's value ("" = Stripe) is replaced by the sandbox's URL
PSP_API_KEY_PARAMETER = "PSP_API_KEY_PARAMETER"  # the SSM parameter holding the key: the sandbox's key is stored
WEBHOOK_SECRET_PARAMETER = "WEBHOOK_SECRET_PARAMETER"  # where the receiver reads the endpoint's signing secret
# Adyen (infra/psp_context.py): with the Adyen sandbox, the template's Checkout base ("" = Adyen's own URL) and
# merchant account are replaced by the sandbox's, and its API key is stored where ADYEN_API_KEY_PARAMETER says.
ADYEN_CHECKOUT_BASE = "ADYEN_CHECKOUT_BASE"
ADYEN_MERCHANT_ACCOUNT = "ADYEN_MERCHANT_ACCOUNT"
ADYEN_API_KEY_PARAMETER = "ADYEN_API_KEY_PARAMETER"
ADYEN_HMAC_KEY_PARAMETER = "ADYEN_HMAC_KEY_PARAMETER"
PSP_ROUTING = "PSP_ROUTING"  # the template's rules ("" by default), replaced by the caller's psp_routing if given


class Sandbox(Protocol):
    url: str

    def stop(self) -> None: ...


SandboxFactory = Callable[[int], Sandbox]


def default_sandbox(port: int) -> Sandbox:
    """The repository's Stripe-compatible PSP sandbox."""
    from psp_sandbox.server import start_sandbox  # imported late: toy stacks run without it

    return start_sandbox(port=port)


def default_adyen_sandbox(port: int) -> Sandbox:
    """The repository's Adyen-compatible sandbox (psp_sandbox/adyen), with its own key, merchant account and HMAC
    key (`adyen_sandbox_settings`). The stack points its notifications at the local API's /v1/webhooks/adyen once
    it runs (`LocalStack._point_adyen_notifications`)."""
    from psp_sandbox.adyen import start_adyen_sandbox

    return start_adyen_sandbox(port=port)


def adyen_sandbox_hmac_key() -> str:
    """The HMAC key (hex) the Adyen sandbox signs its notifications with, imported late as the sandboxes are."""
    from psp_sandbox.adyen.server import HMAC_KEY

    return HMAC_KEY


def adyen_sandbox_settings() -> tuple[str, str, str]:
    """(Checkout API path, API key, merchant account) an Adyen sandbox factory's server must serve: the defaults
    of psp_sandbox/adyen, imported late as the sandboxes are."""
    from psp_sandbox.adyen.server import API_KEY, MERCHANT_ACCOUNT, VERSION

    return f"/{VERSION}", API_KEY, MERCHANT_ACCOUNT


def routes_to_adyen(routing: str) -> bool:
    """Whether a PSP_ROUTING text sends any charge to Adyen (RoutingConfigError if it cannot be read)."""
    from functions.shared.routing import ADYEN, parse_routing

    return ADYEN in parse_routing(routing).psps  # a rule's, or a failover's


@dataclass
class Ports:
    aws: int = 5000
    api: int = 3000
    psp: int = 12111
    adyen: int = 12112  # only bound when the Adyen sandbox runs


def _start_cold() -> None:
    """A new deployment starts cold: forget the clients and settings the handlers cached in this process
    (a previous stack's endpoints and table names)."""
    try:
        from functions.shared import aws, breaker, config, psp
    except ImportError:  # a toy stack without the project's code
        return
    from aws_lambda_powertools.utilities import parameters

    aws.reset_clients()
    config.settings.cache_clear()
    psp.reset_client()
    breaker.reset()  # built with a previous stack's PspHealth table name
    parameters.clear_caches()  # a previous stack's PSP key, read from its SSM


class LocalStack:
    """Start with `with LocalStack() as stack:` (or start()/stop()).

    Order: moto server -> deploy the template -> in-process Lambda dispatch -> SQS pollers and schedules ->
    PSP sandboxes (Stripe's; Adyen's when `adyen_sandbox` is given) -> HTTP gateway. `psp_routing` replaces the
    template's PSP_ROUTING (only in the functions whose template sets it); a routing naming Adyen, given or the
    template's, needs the Adyen sandbox. moto is in memory and process-global: one LocalStack per process at a time,
    and nothing survives stop().
    """

    def __init__(
        self,
        cdk_out: str | Path = REPO_ROOT / "cdk.out",
        stack_name: str = "MarketPay",
        ports: Ports | None = None,
        code_root: str | Path = REPO_ROOT,
        sandbox: SandboxFactory | None = default_sandbox,
        schedule_interval: float | None = None,
        function_concurrency: int | None = 1,
        extra_env: dict[str, str] | None = None,
        adyen_sandbox: SandboxFactory | None = None,
        psp_routing: str | None = None,
    ) -> None:
        if psp_routing is not None and routes_to_adyen(psp_routing) and adyen_sandbox is None:
            raise ValueError("psp_routing routes charges to adyen: start the Adyen sandbox too (adyen_sandbox=)")
        self.cdk_out = Path(cdk_out)
        self.stack_name = stack_name
        self.ports = ports or Ports()
        self.code_root = Path(code_root)
        self._sandbox_factory = sandbox
        self._schedule_interval = schedule_interval
        self._function_concurrency = function_concurrency
        self._extra_env = extra_env or {}
        self.aws_url = f"http://{HOST}:{self.ports.aws}"
        self.api_url = f"http://{HOST}:{self.ports.api}"
        # Known before the sandbox starts: the handlers' environment is set before any of them runs.
        self.psp_url: str | None = f"http://{HOST}:{self.ports.psp}" if sandbox else None
        self._adyen_factory = adyen_sandbox
        self.adyen_url: str | None = f"http://{HOST}:{self.ports.adyen}" if adyen_sandbox else None
        self.adyen_sandbox: Sandbox | None = None
        self.psp_routing = psp_routing
        self.moto: MotoServer | None = None
        self.deployed: DeployedStack | None = None
        self.runtime: LambdaRuntime | None = None
        self.events: EventSources | None = None
        self.gateway: Gateway | None = None
        self.sandbox: Sandbox | None = None
        self.startup_seconds: float | None = None
        self.webhook_endpoint_id: str | None = None
        self.api_key: str | None = None  # the development key (every scope), made at start
        self._env = SavedEnvironment()

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> LocalStack:
        started = time.monotonic()
        ports = {"aws": self.ports.aws, "api": self.ports.api}
        if self._sandbox_factory is not None:
            ports["psp"] = self.ports.psp
        if self._adyen_factory is not None:
            ports["adyen"] = self.ports.adyen
        check_ports_free(ports, HOST)  # before anything starts: a taken port fails here, naming its holder
        try:
            self._set_env({**AWS_ENV, "MOTO_PORT": str(self.ports.aws)})
            self.moto = start_moto(self.ports.aws)
            self.deployed = deploy(self.cdk_out, self.stack_name, self.aws_url, self.api_url + "/")
            self.runtime = LambdaRuntime(self.code_root, self._lambda_env(), self._function_concurrency,
                                         replacements=self._replacements())
            function_envs = self._function_envs()
            self._check_adyen_reachable(function_envs)
            self._store_psp_key(function_envs)
            self._store_adyen_key(function_envs)
            self.runtime.install(function_envs)
            self._set_env(self._tools_env(function_envs))
            _start_cold()
            self.api_key = self._development_key(function_envs)
            self.events = EventSources(
                self.aws_url,
                sqs_mappings(self.deployed, self.aws_url),
                schedule_targets(self.deployed),
                schedule_interval=self._schedule_interval,
                streams=stream_mappings(self.deployed),
                visibility_set_by_function=self.runtime.visibility_set.__contains__,
                pollers_per_function=self._function_concurrency,
            )
            self.events.start()
            if self._sandbox_factory is not None:
                self.sandbox = self._sandbox_factory(self.ports.psp)
            if self._adyen_factory is not None:
                self.adyen_sandbox = self._adyen_factory(self.ports.adyen)
                self._point_adyen_notifications()
            self.gateway = Gateway(http_api_routes(self.deployed), self.aws_url, self.ports.api)
            self.gateway.start()
            self._register_webhook_endpoint(function_envs)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        started = time.monotonic()
        self._warn_ungranted()
        steps = (
            ("gateway", lambda: self.gateway and self.gateway.stop()),
            ("event sources", lambda: self.events and self.events.stop()),
            ("psp sandbox", lambda: self.sandbox and self.sandbox.stop()),
            ("adyen sandbox", lambda: self.adyen_sandbox and self.adyen_sandbox.stop()),
            ("lambda runtime", lambda: self.runtime and self.runtime.uninstall()),
            ("moto", lambda: self.moto and self.moto.stop()),
        )
        for name, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - stop everything we can
                log.exception("error while stopping the %s", name)
        self.gateway = self.events = self.sandbox = self.adyen_sandbox = self.runtime = self.moto = None
        self._env.restore()
        log.info("local stack stopped in %.2f s", time.monotonic() - started)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what callers use ----------------------------------------------------------------------------

    @property
    def outputs(self) -> dict[str, str]:
        assert self.deployed is not None, "start() first"
        return self.deployed.outputs

    def client(self, service: str) -> Any:
        """A boto3 client for the local AWS endpoint."""
        return boto3.session.Session(region_name=REGION).client(service, endpoint_url=self.aws_url)

    def endpoints(self) -> dict[str, str]:
        return {"api": self.api_url, "aws": self.aws_url, "psp": self.psp_url or "off",
                "adyen": self.adyen_url or "off"}

    def ungranted_calls(self) -> dict[str, list[Call]]:
        """Function -> the AWS calls its code made here that its role in the template does not grant."""
        assert self.runtime is not None and self.deployed is not None, "start() first"
        return Roles.of(self.deployed).ungranted(self.runtime.calls)

    def set_notification_endpoint(self, url: str, secret: str | None = None) -> dict[str, Any]:
        """PUT /v1/notification_endpoint through the gateway, as a storefront does; the answer (with the
        generated secret when none was given and the endpoint is new)."""
        import json
        import urllib.request

        body = json.dumps({"url": url, **({"secret": secret} if secret else {})}).encode()
        request = urllib.request.Request(f"{self.api_url}/v1/notification_endpoint", data=body, method="PUT",
                                         headers={"Content-Type": "application/json", **self.auth_headers})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def ready_line(self) -> str:
        return " ".join(["READY"] + [f"{k}={v}" for k, v in self.endpoints().items()] + [f"api_key={self.api_key}"])

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a storefront sends with every API call: the development key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    @staticmethod
    def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll predicate until it returns something truthy; return it, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    # --- internals -----------------------------------------------------------------------------------

    def _replacements(self) -> dict[str, str]:
        """Template values the local stack puts its own in place of, in the functions whose template sets them
        (a replacement never adds a variable: a function the template does not wire never gets it)."""
        values: dict[str, str] = {}
        if self.psp_url:
            values[PSP_API_BASE] = self.psp_url
        if self.adyen_url:
            path, _key, merchant_account = adyen_sandbox_settings()
            values[ADYEN_CHECKOUT_BASE] = self.adyen_url + path
            values[ADYEN_MERCHANT_ACCOUNT] = merchant_account
        if self.psp_routing is not None:
            values[PSP_ROUTING] = self.psp_routing
        return values

    def _check_adyen_reachable(self, function_envs: dict[str, dict[str, str]]) -> None:
        """A template whose own routing names Adyen (synthesized with `-c psp_routing=...`) run without the Adyen
        sandbox would charge Adyen's real test platform: refused before anything runs."""
        if self.adyen_url or self.psp_routing is not None:
            return
        routed = sorted(name for name, env in function_envs.items() if routes_to_adyen(env.get(PSP_ROUTING, "")))
        if routed:
            raise ValueError(f"the template's PSP_ROUTING ({', '.join(routed)}) routes charges to adyen: start the "
                             "Adyen sandbox too (adyen_sandbox=)")

    def _lambda_env(self) -> dict[str, str]:
        """Given to every function besides its template variables: credentials and the local endpoint (what
        Lambda and the local stack set), and the caller's extra_env."""
        return {"AWS_ENDPOINT_URL": self.aws_url, **AWS_ENV, **self._extra_env}

    def _tools_env(self, function_envs: dict[str, dict[str, str]]) -> dict[str, str]:
        """For code running beside the functions (ops tools, chaos, demos calling functions/shared), as an
        operator's shell set up for this stack: the names the functions share (a variable with two values, or a
        function's own identity, is left out) and the local AWS endpoint. No function sees it: each has only its own
        environment."""
        values: dict[str, set[str]] = {}
        for env in function_envs.values():
            for key, value in env.items():
                values.setdefault(key, set()).add(self.runtime.replacements.get(key, value) if self.runtime else value)
        shared = {k: v.pop() for k, v in values.items() if len(v) == 1 and k != "POWERTOOLS_SERVICE_NAME"}
        return {**shared, "AWS_ENDPOINT_URL": self.aws_url}

    @staticmethod
    def _development_key(function_envs: dict[str, dict[str, str]]) -> str | None:
        """A key of the default client with every scope (the operator's offline_payments:write too, which `python -m
        ops keys create` gives only when asked), so the local stack's key can try every route; none
        for a template without the keys' table (the toy stacks of tests/local). The table is the one this
        stack's functions name, never one a previous test left in the environment."""
        tables = {env[ENV_API_KEYS_TABLE] for env in function_envs.values() if env.get(ENV_API_KEYS_TABLE)}
        return issue_key(ApiKeysTable(tables.pop()), DEFAULT_CLIENT_ID, SCOPES) if len(tables) == 1 else None

    def _store_psp_key(self, function_envs: dict[str, dict[str, str]]) -> None:
        """The PSP's secret key, where the template says the functions read it (created outside CloudFormation
        on AWS): the sandbox's test key."""
        if not self.psp_url:
            return
        parameters = {env[PSP_API_KEY_PARAMETER] for env in function_envs.values() if env.get(PSP_API_KEY_PARAMETER)}
        ssm = self.client("ssm")
        for name in sorted(parameters):
            ssm.put_parameter(Name=name, Value=PSP_TEST_KEY, Type="SecureString", Overwrite=True)

    def _store_adyen_key(self, function_envs: dict[str, dict[str, str]]) -> None:
        """Adyen's API key, where the template says the Executor and the Refund worker read it, and the HMAC key
        of its notifications, where the receiver reads it: the Adyen sandbox's."""
        if not self.adyen_url:
            return
        _path, key, _merchant_account = adyen_sandbox_settings()
        ssm = self.client("ssm")
        for variable, value in ((ADYEN_API_KEY_PARAMETER, key), (ADYEN_HMAC_KEY_PARAMETER, adyen_sandbox_hmac_key())):
            for name in sorted({env[variable] for env in function_envs.values() if env.get(variable)}):
                ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)

    def _point_adyen_notifications(self) -> None:
        """The Adyen sandbox's notifications to the local API's /v1/webhooks/adyen (as an Adyen webhook is set up
        in its Customer Area), when the sandbox is the repository's (a factory's own stand-in may have none)."""
        notifier = getattr(getattr(self.adyen_sandbox, "sandbox", None), "notifier", None)
        if notifier is not None:
            notifier.url = self.api_url + ADYEN_WEBHOOK_PATH

    def _function_envs(self) -> dict[str, dict[str, str]]:
        lam = self.client("lambda")
        envs = {}
        for page in lam.get_paginator("list_functions").paginate():
            for fn in page["Functions"]:
                envs[fn["FunctionName"]] = fn.get("Environment", {}).get("Variables", {})
        return envs

    def _warn_ungranted(self) -> None:
        if self.runtime is None or self.deployed is None:
            return
        try:
            for function, calls in self.ungranted_calls().items():
                log.warning("%s made calls its role does not grant (AWS would refuse them): %s",
                            function, "; ".join(map(str, calls)))
        except ValueError as error:  # a role the local check cannot read (a managed policy)
            log.warning("permissions not checked: %s", error)

    def _set_env(self, values: dict[str, str]) -> None:
        self._env.set(values)

    def _register_webhook_endpoint(self, function_envs: dict[str, dict[str, str]]) -> None:
        """As an operator does once per account: a webhook endpoint at the PSP for the gateway's
        /v1/webhooks/stripe, the event types MarketPay handles (WEBHOOK_EVENT_TYPES), and its signing secret (shown
        once) stored where the template says the receiver reads it. Only with the repository's sandbox and a
        template that has the receiver."""
        parameters = {env[WEBHOOK_SECRET_PARAMETER] for env in function_envs.values()
                      if env.get(WEBHOOK_SECRET_PARAMETER)}
        if not self.psp_url or not parameters or self.sandbox is None:
            return
        form = urllib.parse.urlencode([("url", self.api_url + WEBHOOK_PATH),
                                       *(("enabled_events[]", kind) for kind in WEBHOOK_EVENT_TYPES),
                                       ("description", "MarketPay local stack")]).encode()
        request = urllib.request.Request(self.psp_url + "/v1/webhook_endpoints", data=form, method="POST",
                                         headers={"Authorization": f"Bearer {PSP_TEST_KEY}"})
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - the sandbox on loopback
            endpoint = json.loads(answer.read())
        ssm = self.client("ssm")
        for name in sorted(parameters):
            ssm.put_parameter(Name=name, Value=endpoint["secret"], Type="SecureString", Overwrite=True)
        self.webhook_endpoint_id = endpoint["id"]
        log.info("webhook endpoint %s registered for %s", endpoint["id"], self.api_url + WEBHOOK_PATH)
