"""Decode Stripe's form encoding (`metadata[k]=v`, `payment_method_types[0]=card`, `expand[]=x`) into
nested dicts and lists, the shape the SDK encoded them from."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _parts(key: str) -> list[str]:
    match = _KEY.match(key)
    if not match:
        return [key]
    return [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def decode_form(text: str) -> dict[str, Any]:
    """`a[b][0]=x&a[b][1]=y&c=1` → `{"a": {"b": ["x", "y"]}, "c": "1"}`. Values stay strings."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = _parts(key)
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":  # `expand[]`: append
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):  # `a=1&a[b]=2`: the later nested form wins
                    child = node[part] = {}
                node = child
    return _listify(root)
