"""Each in-process Lambda sees its own environment, as in its own AWS sandbox.

All handlers share one process (fault hooks and tests patch the shared modules), so isolation is a view:
- `os.environ` is replaced by `ScopedEnviron`: inside a function's scope (the current thread's context, passed on
  to the threads and pool tasks the handler starts) it reads and writes that function's variables only, outside
  it the process's own environment.
- The code's cold-start singletons, the zero-argument `functools.cache` functions of its packages (settings(),
  a PSP key), are rebound to `ScopedCache`: one value per function, built inside that function's scope.
A variable the function's template does not give it is therefore missing, as on AWS.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FunctionScope:
    name: str
    env: dict[str, str] = field(hash=False, compare=False)


_current: contextvars.ContextVar[FunctionScope | None] = contextvars.ContextVar("lambda_scope", default=None)


def current() -> FunctionScope | None:
    return _current.get()


@contextlib.contextmanager
def entered(scope: FunctionScope | None) -> Iterator[None]:
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)


class ScopedEnviron(MutableMapping[str, str]):
    """Stands in for os.environ: the current function's variables inside its scope, the process's outside."""

    def __init__(self, process: MutableMapping[str, str]) -> None:
        self.process = process

    def _data(self) -> MutableMapping[str, str]:
        scope = _current.get()
        return self.process if scope is None else scope.env

    def __getitem__(self, key: str) -> str:
        return self._data()[key]

    def __setitem__(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"str expected, not {type(key).__name__}/{type(value).__name__}")
        self._data()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data()))

    def __len__(self) -> int:
        return len(self._data())

    def copy(self) -> dict[str, str]:
        return dict(self._data())

    def __repr__(self) -> str:
        scope = _current.get()
        return f"ScopedEnviron({scope.name if scope else 'process'}, {dict(self._data())!r})"


class ScopedCache:
    """Stands in for a zero-argument functools.cache function: one value per function scope (the original cache
    outside any scope). `cache_clear()` forgets every value."""

    def __init__(self, original: Any) -> None:
        functools.update_wrapper(self, original)
        self.original = original
        self._values: dict[str, Any] = {}

    def __call__(self) -> Any:
        scope = _current.get()
        if scope is None:
            return self.original()
        if scope.name not in self._values:
            value = self.original.__wrapped__()
            self._values.setdefault(scope.name, value)
        return self._values[scope.name]

    def cache_clear(self) -> None:
        self._values.clear()
        self.original.cache_clear()

    def cache_info(self) -> Any:
        return self.original.cache_info()


def _is_singleton(value: Any) -> bool:
    if not isinstance(value, functools._lru_cache_wrapper):  # type: ignore[attr-defined]
        return False
    try:
        return not inspect.signature(value.__wrapped__).parameters
    except (TypeError, ValueError):
        return False


class ProcessView:
    """Installs the scoped os.environ, context passing to threads and pool tasks, and scoped singletons."""

    def __init__(self, packages: Iterable[str] = ()) -> None:
        self.packages = set(packages)
        self._scoped: dict[int, ScopedCache] = {}
        self._rebound: list[tuple[Any, str, Any]] = []
        self._saved: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()

    def install(self) -> None:
        if isinstance(os.environ, ScopedEnviron):
            raise RuntimeError("a LambdaRuntime is already installed in this process")
        self._patch(os, "environ", ScopedEnviron(os.environ))
        self._patch(threading.Thread, "start", _start_in_scope(threading.Thread.start))
        executor = concurrent.futures.ThreadPoolExecutor
        self._patch(executor, "submit", _submit_in_scope(executor.submit))
        self.scope_singletons()

    def uninstall(self) -> None:
        with self._lock:
            for module, name, original in reversed(self._rebound):
                if isinstance(getattr(module, name, None), ScopedCache):
                    setattr(module, name, original)
            self._rebound.clear()
            self._scoped.clear()
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def scope_singletons(self, package: str | None = None) -> None:
        """Rebind every zero-argument cache function of the code's packages (call again after imports)."""
        with self._lock:
            if package:
                self.packages.add(package)
            for module in list(sys.modules.values()):
                name = getattr(module, "__name__", "") or ""
                if name.split(".", 1)[0] not in self.packages:
                    continue
                for attr, value in list(vars(module).items()):
                    if isinstance(value, ScopedCache) or not _is_singleton(value):
                        continue
                    scoped = self._scoped.setdefault(id(value), ScopedCache(value))
                    setattr(module, attr, scoped)
                    self._rebound.append((module, attr, value))

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)


def _start_in_scope(start: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(start)
    def start_in_scope(self: threading.Thread) -> None:
        scope = _current.get()
        if scope is not None:
            run = self.run

            def run_in_scope() -> None:
                with entered(scope):
                    run()

            self.run = run_in_scope  # type: ignore[method-assign]
        start(self)

    return start_in_scope


def _submit_in_scope(submit: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(submit)
    def submit_in_scope(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        scope = _current.get()

        def in_scope(*a: Any, **kw: Any) -> Any:
            with entered(scope):
                return fn(*a, **kw)

        return submit(self, in_scope, *args, **kwargs)

    return submit_in_scope
