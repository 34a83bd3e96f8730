"""Modules imported on first use, for large packages only some invocations need (benchmarks/cold_start.py).

`np = deferred("numpy")` at module level costs nothing at import; the first `np.<name>` imports numpy, and each
name is then kept on the proxy, so later look-ups are plain attribute reads. Only for attribute access: nothing
at module level may use the proxy, or the import happens there.
"""

from __future__ import annotations

import importlib
from typing import Any


class Deferred:
    """Stands for module `name` until an attribute of it is first read."""

    def __init__(self, name: str):
        self.__name = name

    def __getattr__(self, attribute: str) -> Any:  # only called for names not yet kept on the proxy
        value = getattr(importlib.import_module(self.__name), attribute)
        setattr(self, attribute, value)
        return value

    def __repr__(self) -> str:
        return f"<deferred module {self.__name!r}>"


def deferred(name: str) -> Any:
    return Deferred(name)
