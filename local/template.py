"""Reading a synthesized CloudFormation template: the one source of the local wiring."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SUB_VAR = re.compile(r"\$\{([^!}][^}]*)\}")


@dataclass(frozen=True)
class Template:
    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Template:
        path = Path(path)
        return cls(path=path, data=json.loads(path.read_text()))

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.data.get("Resources", {})

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r.get("Type") == resource_type}

    def props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {})


def referenced_ids(expr: Any) -> set[str]:
    """Logical ids an expression points at through Ref, Fn::GetAtt or Fn::Sub."""
    found: set[str] = set()
    for kind, target in _walk_refs(expr):
        if kind != "pseudo":
            found.add(target)
    return found


def _walk_refs(expr: Any) -> Iterator[tuple[str, str]]:
    if isinstance(expr, dict):
        for key, value in expr.items():
            if key == "Ref" and isinstance(value, str):
                yield ("pseudo" if value.startswith("AWS::") else "ref", value)
            elif key == "Fn::GetAtt":
                parts = value.split(".", 1) if isinstance(value, str) else value
                yield ("getatt", parts[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                local_vars = set(value[1]) if isinstance(value, list) else set()
                for var in _SUB_VAR.findall(text):
                    name = var.split(".", 1)[0]
                    if name not in local_vars:
                        yield ("pseudo" if name.startswith("AWS::") else "sub", name)
                if isinstance(value, list):
                    yield from _walk_refs(value[1])
            else:
                yield from _walk_refs(value)
    elif isinstance(expr, list):
        for item in expr:
            yield from _walk_refs(item)


def getatt_target(expr: Any) -> str | None:
    """The logical id of a bare {"Fn::GetAtt": [X, ...]} or {"Ref": X}, else None."""
    if isinstance(expr, dict) and len(expr) == 1:
        if "Ref" in expr:
            return expr["Ref"]
        if "Fn::GetAtt" in expr:
            value = expr["Fn::GetAtt"]
            return (value.split(".", 1) if isinstance(value, str) else value)[0]
    return None


def lambda_targets_in_definition(definition: Any) -> list[tuple[str, Any]]:
    """Every Lambda a state machine definition calls: (state name, function expression).

    Handles both task forms CDK emits: Resource = the function ARN (payloadResponseOnly) and
    Resource = arn:aws:states:::lambda:invoke with Parameters.FunctionName.
    """
    found: list[tuple[str, Any]] = []

    def visit(states: dict[str, Any]) -> None:
        for name, state in states.items():
            if state.get("Type") == "Task":
                resource = state.get("Resource")
                if isinstance(resource, str) and resource.startswith("arn:aws:states:::lambda:invoke"):
                    found.append((name, state.get("Parameters", {}).get("FunctionName")))
                elif isinstance(resource, str) and ":lambda:" in resource and ":function:" in resource:
                    found.append((name, resource))
            for branch in state.get("Branches", []):
                visit(branch.get("States", {}))
            for key in ("Iterator", "ItemProcessor"):
                if key in state:
                    visit(state[key].get("States", {}))

    visit(definition.get("States", {}))
    return found
