"""Reading CloudFormation expressions of the synthesized template in tests."""

from __future__ import annotations

import json
from typing import Any


def render(expr: Any) -> str:
    """A string expression with its tokens spelled out: GetAtt X.Arn -> `X`, Ref X -> `X`, Ref AWS::Y -> `<AWS::Y>`."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict):
        if "Fn::GetAtt" in expr:
            return expr["Fn::GetAtt"][0]
        if "Ref" in expr:
            ref = expr["Ref"]
            return f"<{ref}>" if ref.startswith("AWS::") else ref
        if "Fn::Join" in expr:
            separator, parts = expr["Fn::Join"]
            return separator.join(render(p) for p in parts)
    raise ValueError(f"cannot render {expr!r}")


def state_machine_definition(props: dict[str, Any]) -> dict[str, Any]:
    """The DefinitionString as ASL, each function ARN replaced by the function's logical id."""
    return json.loads(render(props["DefinitionString"]))


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
