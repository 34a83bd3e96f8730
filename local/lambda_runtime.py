"""In-process Lambda: moto's Invoke runs the repository's handler in this process.

moto runs Lambda code only in Docker. `moto.awslambda.models.LambdaFunction._invoke_lambda(self, event)`
(returns `(payload_json, errored, logs)`) is replaced by a dispatcher that imports the function's handler
string from the code root and calls it with the event and a LambdaContext. Everything that invokes a Lambda
through moto (the Invoke API, the Step Functions interpreter, S3 notifications to Lambda, our SQS pollers,
schedules and gateway) therefore runs real code. This is a moto internal: moto is pinned (5.2.5) and
tests/local/test_lambda_runtime.py fails if the hook stops being called.

Each function runs at most `function_concurrency` invocations at once, each in its own execution environment:
the first uses the handler's importable module, every further one its own copy of that module, so module-level
state (a batch processor's records, a logger's keys) is never shared by two invocations, as on AWS. Class-level
state is still shared: a handler module holding a Powertools resolver (which keeps the
current event on its `BaseRouter` class) runs one invocation at a time.

Each function sees exactly its own environment (local/scope.py): its template variables (resolved, as
deployed), what Lambda itself sets (region, function name, memory, credentials), the local AWS endpoint, the
replacements of template values the local stack needs (the PSP sandbox's URL for PSP_API_BASE: a replacement
never adds a variable), and the caller's `extra_env`. Its cold-start singletons (settings()) are its own. Every
AWS call made in a function's scope is recorded in `runtime.calls` as the IAM authorizations AWS would check
(local/permissions.py), so a test can hold them against the function's role.

Fault hooks (kept simple on purpose; the fault-injection work builds on them):
- `runtime.before_invoke` / `runtime.after_invoke`: lists of callables `hook(invocation)`; `invocation` has
  `.function_name`, `.event`, `.context` and, after the handler, `.result`. A hook that raises `LambdaKilled`
  makes the invocation end as a runtime crash (AWS: `Runtime.ExitError`): raised before, the handler never ran;
  raised after, the handler's work is done but its answer is lost. Any other exception from a hook is reported
  as that exception, as if the handler had raised it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.client import BaseClient
from moto.awslambda.models import LambdaFunction

from local.moto_server import REGION
from local.permissions import Call, calls_as_iam
from local.scope import FunctionScope, ProcessView, current, entered

log = logging.getLogger("local.lambda")


class LambdaKilled(BaseException):
    """Raised by a fault hook: the Lambda sandbox dies (AWS reports Runtime.ExitError). A BaseException, like
    SystemExit, so a handler's `except Exception` (or a batch processor's per-record catch) cannot survive it."""


@dataclass
class LambdaContext:
    """The context object AWS passes to a Python handler (the attributes handlers and Powertools read)."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    timeout_s: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    identity: Any = None
    client_context: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.start()
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def start(self) -> None:
        """The timeout counts from the handler's start, as on AWS (not from a wait for a free environment)."""
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    function_name: str
    event: Any
    context: LambdaContext
    trigger: str
    result: Any = None


@dataclass(frozen=True)
class InvocationRecord:
    """One line of the invocation log."""

    function_name: str
    trigger: str
    duration_ms: float
    outcome: str  # "ok" or the errorType
    request_id: str


def trigger_of(event: Any) -> str:
    """Which AWS service sent this event, from its shape (the dispatcher is not told)."""
    if isinstance(event, dict):
        records = event.get("Records")
        if isinstance(records, list) and records and isinstance(records[0], dict):
            return str(records[0].get("eventSource") or records[0].get("EventSource") or "records")
        if event.get("version") == "2.0" and "routeKey" in event:
            return f"http {event['routeKey']}"
        if event.get("source") == "aws.events":
            return f"schedule {event.get('detail-type', '')}".strip()
    return "invoke"


class LambdaRuntime:
    """Owns the patch of moto's Lambda invoke and the process environment of the handlers."""

    def __init__(
        self,
        code_root: str | Path,
        env_overrides: Mapping[str, str] | None = None,
        function_concurrency: int | None = 1,
        replacements: Mapping[str, str] | None = None,
    ) -> None:
        self.code_root = str(Path(code_root).resolve())
        self.env_overrides = dict(env_overrides or {})  # given to every function (endpoint, credentials, extra)
        self.replacements = dict(replacements or {})  # a template variable's local value, where it has it
        self.calls: dict[str, set[Call]] = {}  # function name -> the AWS authorizations its code needed
        self.before_invoke: list[Callable[[Invocation], None]] = []
        self.after_invoke: list[Callable[[Invocation], None]] = []
        self.invocations: deque[InvocationRecord] = deque(maxlen=10_000)
        self._function_concurrency = function_concurrency
        self._environments: dict[str, _Environments] = {}
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._import_lock = threading.Lock()
        self._original_invoke: Any = None
        self._template_envs: dict[str, dict[str, str]] = {}
        self._scopes: dict[str, FunctionScope] = {}
        self._view: ProcessView | None = None
        self._calls_lock = threading.Lock()
        # receipt handles whose visibility a function set itself (a backoff of its own): local/event_sources.py
        self.visibility_set: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------------

    def install(self, function_envs: Mapping[str, Mapping[str, str]]) -> None:
        """Give each function its own environment and route moto's Lambda invocations here.

        function_envs: function name -> its resolved environment variables (as deployed).
        """
        for name, env in function_envs.items():
            self.define(name, env)
        if self.code_root not in sys.path:
            sys.path.insert(0, self.code_root)
        self._view = ProcessView()
        self._view.install()
        runtime = self
        original_call = BaseClient._make_api_call

        def _invoke_lambda(fn: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            return runtime.dispatch(fn, event)

        def _make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            runtime._record(client, operation, params)
            return original_call(client, operation, params)

        self._original_invoke = LambdaFunction.__dict__["_invoke_lambda"]
        self._original_api_call = original_call
        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]
        BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original_invoke is not None:
            LambdaFunction._invoke_lambda = self._original_invoke  # type: ignore[method-assign]
            BaseClient._make_api_call = self._original_api_call  # type: ignore[method-assign]
            self._original_invoke = None
        if self._view is not None:
            self._view.uninstall()
            self._view = None

    def define(self, function_name: str, template_env: Mapping[str, str]) -> None:
        """The function's environment variables as deployed (resolved); read at its first invocation."""
        self._template_envs[function_name] = dict(template_env)

    def environment_of(self, fn: Any) -> dict[str, str]:
        """What the function's process environment holds on AWS, with the local endpoint and replacements."""
        template = self._template_envs.get(fn.function_name, {})
        lambda_set = {
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "_HANDLER": fn.handler,
            "LAMBDA_TASK_ROOT": self.code_root,
            "TZ": ":UTC",
            "PATH": "/usr/local/bin:/usr/bin/:/bin",
            "LANG": "en_US.UTF-8",
        }
        replaced = {key: value for key, value in self.replacements.items() if key in template}
        return {**lambda_set, **template, **replaced, **self.env_overrides}

    def _scope_of(self, fn: Any) -> FunctionScope | None:
        """The function's scope, once per function (its execution environments share its variables' values).
        None when the runtime is not installed (a dispatch called directly by a test): the process's own."""
        if self._view is None:
            return None
        with self._import_lock:
            if fn.function_name not in self._scopes:
                self._scopes[fn.function_name] = FunctionScope(fn.function_name, self.environment_of(fn))
            return self._scopes[fn.function_name]

    def _record(self, client: BaseClient, operation: str, params: dict[str, Any]) -> None:
        scope = current()
        if scope is None:
            return
        model = client.meta.service_model
        made = calls_as_iam(model.signing_name or model.endpoint_prefix, operation, params)
        with self._calls_lock:
            self.calls.setdefault(scope.name, set()).update(made)
            if operation == "ChangeMessageVisibility":
                self.visibility_set.add(params.get("ReceiptHandle", ""))
            elif operation == "ChangeMessageVisibilityBatch":
                self.visibility_set.update(entry.get("ReceiptHandle", "") for entry in params.get("Entries", []))

    # --- dispatch ------------------------------------------------------------------------------------

    def dispatch(self, fn: LambdaFunction, event: Any) -> tuple[str, bool, str]:
        """moto's `_invoke_lambda` contract: (payload JSON, errored, logs)."""
        if isinstance(event, str | bytes):
            event = json.loads(event or "{}")
        context = LambdaContext(
            function_name=fn.function_name,
            memory_limit_in_mb=int(fn.memory_size),
            invoked_function_arn=fn.function_arn,
            aws_request_id=str(uuid.uuid4()),
            timeout_s=float(fn.timeout),
        )
        invocation = Invocation(fn.function_name, event, context, trigger_of(event))
        with entered(self._scope_of(fn)), self._environments_of(fn.function_name, fn.handler).take() as environment:
            started = time.monotonic()  # the handler's own duration, as Lambda bills it (not the wait)
            context.start()
            payload, error_type = self._run(fn.handler, invocation, environment)
            duration = time.monotonic() - started
        if error_type is None and duration > context.timeout_s:
            # The handler's side effects stay, as on AWS; its answer is replaced by the timeout error.
            error_type = "Sandbox.Timedout"
            payload = {
                "errorType": error_type,
                "errorMessage": f"RequestId: {context.aws_request_id} Error: Task timed out after "
                f"{context.timeout_s:.2f} seconds",
            }
        record = InvocationRecord(
            fn.function_name,
            invocation.trigger,
            round(duration * 1000, 1),
            error_type or "ok",
            context.aws_request_id,
        )
        self.invocations.append(record)
        log.info(
            "lambda %-28s %-30s %6.0f ms  %s",
            record.function_name,
            record.trigger,
            record.duration_ms,
            record.outcome,
        )
        return json.dumps(payload), error_type is not None, ""

    def _run(self, handler_string: str, inv: Invocation, environment: int = 0) -> tuple[Any, str | None]:
        try:
            handler = self.handler_for(inv.function_name, handler_string, environment)
        except ImportError as exc:  # the names AWS's Python runtime reports
            message = f"Unable to import module '{handler_string.rpartition('.')[0]}': {exc}"
            return _error_payload("Runtime.ImportModuleError", message, inv.context), "Runtime.ImportModuleError"
        except AttributeError as exc:
            message = f"Handler '{handler_string}' missing on module: {exc}"
            return _error_payload("Runtime.HandlerNotFound", message, inv.context), "Runtime.HandlerNotFound"
        try:
            for hook in self.before_invoke:
                hook(inv)
            inv.result = handler(inv.event, inv.context)
            for hook in self.after_invoke:
                hook(inv)
        except LambdaKilled as exc:
            message = f"RequestId: {inv.context.aws_request_id} Error: Runtime exited ({exc})"
            return _error_payload("Runtime.ExitError", message, inv.context), "Runtime.ExitError"
        except Exception as exc:  # noqa: BLE001 - every handler error becomes the AWS error shape
            return _exception_payload(exc, inv.context)
        try:
            json.dumps(inv.result)
        except (TypeError, ValueError) as exc:
            message = f"Unable to marshal response: {exc}"
            return _error_payload("Runtime.MarshalError", message, inv.context), "Runtime.MarshalError"
        return inv.result, None

    def handler_for(self, function_name: str, handler_string: str, environment: int = 0) -> Callable[..., Any]:
        """Import `package.module.function` from the code root, once per execution environment (a warm Lambda
        keeps its module). Environment 0 uses the importable module itself (what tests patch; one a test imported
        first keeps what it was built with there, such as its metrics' service name); each further
        environment runs its own copy of the handler's module, so module state is never shared by two
        invocations running at once, as on AWS (class-level state is: see `_keeps_state_on_classes`). The
        modules the handler imports are shared; their zero-argument caches (settings()) are per function."""
        with self._import_lock:
            key = f"{function_name}:{handler_string}:{environment}"
            if key not in self._handlers:
                module_name, _, attr = handler_string.rpartition(".")
                if not module_name:
                    raise ImportError(f"Bad handler '{handler_string}': expected module.function")
                module = importlib.import_module(module_name) if environment == 0 else _fresh_copy(module_name)
                if self._view is not None:
                    self._view.scope_singletons(module_name.split(".")[0])  # what this import brought in
                self._handlers[key] = getattr(module, attr)
            return self._handlers[key]

    def _environments_of(self, function_name: str, handler_string: str) -> _Environments:
        with self._import_lock:
            if function_name in self._environments:
                return self._environments[function_name]
        limit = self._function_concurrency
        try:
            self.handler_for(function_name, handler_string)  # imported as an invocation would (service name)
            if _keeps_state_on_classes(sys.modules[handler_string.rpartition(".")[0]]):
                limit = 1
        except Exception:  # noqa: BLE001 - the invocation reports the error in AWS's terms
            pass
        with self._import_lock:
            return self._environments.setdefault(function_name, _Environments(limit))


def _keeps_state_on_classes(module: Any) -> bool:
    """True for a handler module holding a Powertools event-handler resolver: Powertools keeps the current event
    on the `BaseRouter` class, so a copy of the module would still share it; such a function runs one
    invocation at a time here (on AWS each invocation has its own process)."""
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    return any(isinstance(value, BaseRouter) for value in vars(module).values())


def _fresh_copy(module_name: str) -> Any:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named '{module_name}'")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Environments:
    """A function's execution environments: each runs one invocation at a time; at most `limit` exist
    (None: as many as invocations at once). The most recently freed one is reused first (warm)."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._free: list[int] = []
        self._count = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def take(self) -> Iterator[int]:
        with self._changed:
            while not self._free and self._limit is not None and self._count >= self._limit:
                self._changed.wait()
            if self._free:
                environment = self._free.pop()
            else:
                environment, self._count = self._count, self._count + 1
        try:
            yield environment
        finally:
            with self._changed:
                self._free.append(environment)
                self._changed.notify()


class SavedEnvironment:
    """Sets process environment variables and puts back what was there before (restore)."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


def _exception_payload(exc: BaseException, context: LambdaContext) -> tuple[dict[str, Any], str]:
    """The Python runtime's error shape: Step Functions takes errorType as the error name."""
    error_type = type(exc).__name__
    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb  # drop the dispatcher's own frame
    return _error_payload(error_type, str(exc), context, traceback.format_tb(tb)), error_type


def _error_payload(
    error_type: str, message: str, context: LambdaContext, stack: list[str] | None = None
) -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": context.aws_request_id,
        "stackTrace": stack or [],
    }
