"""Each Lambda function's unzipped size with its layers, measured on the synthesized assets (cdk.out).

    python scripts/function_sizes.py [cdk.out]

Prints one row per function; exits 1 when a function with its layers exceeds Lambda's 250 MB unzipped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIMIT_MB = 250  # Lambda: a function and all its layers, unzipped
LAYER_METADATA = "MarketPayLayer"  # infra/constructs/functions.py names each layer resource with it
STACK_TEMPLATE = "MarketPay.template.json"


@dataclass(frozen=True)
class FunctionSize:
    handler: str
    code_mb: float
    layers_mb: dict[str, float]

    @property
    def total_mb(self) -> float:
        return self.code_mb + sum(self.layers_mb.values())


def folder_mb(folder: Path) -> float:
    """Bytes of the regular files under `folder` (what the zip holds once unzipped), in MiB."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def function_sizes(
    template: dict[str, Any], code_folder: Callable[[str], Path], layer_folder: Callable[[str, str], Path]
) -> list[FunctionSize]:
    """`code_folder(s3_key)` and `layer_folder(name, s3_key)` say where each asset's unzipped files are."""
    resources = template["Resources"]
    sizes = []
    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        layers = {}
        for ref in props.get("Layers", []):
            layer = resources[ref["Ref"]]
            name = layer.get("Metadata", {}).get(LAYER_METADATA, ref["Ref"])
            layers[name] = folder_mb(layer_folder(name, layer["Properties"]["Content"]["S3Key"]))
        sizes.append(FunctionSize(props["Handler"], folder_mb(code_folder(props["Code"]["S3Key"])), layers))
    return sorted(sizes, key=lambda s: s.handler)


def of_assembly(outdir: Path) -> list[FunctionSize]:
    """Sizes as `cdk deploy` would upload them: the asset folders CDK staged in the cloud assembly."""
    template = json.loads((outdir / STACK_TEMPLATE).read_text())

    def staged(s3_key: str) -> Path:
        return outdir / f"asset.{s3_key.removesuffix('.zip')}"

    return function_sizes(template, staged, lambda _name, s3_key: staged(s3_key))


def table(sizes: list[FunctionSize]) -> str:
    rows = [f"{'function (handler)':<42} {'code MB':>8} {'layers (MB)':<36} {'total MB':>9}"]
    for s in sizes:
        layers = " + ".join(f"{name} {mb:.1f}" for name, mb in s.layers_mb.items())
        flag = "  > LIMIT" if s.total_mb > LIMIT_MB else ""
        rows.append(f"{s.handler:<42} {s.code_mb:>8.1f} {layers:<36} {s.total_mb:>9.1f}{flag}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sizes = of_assembly(Path(args[0] if args else "cdk.out"))
    print(table(sizes))
    over = [s.handler for s in sizes if s.total_mb > LIMIT_MB]
    if over:
        print(f"over Lambda's {LIMIT_MB} MB unzipped (function + layers): {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
