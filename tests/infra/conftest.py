"""Synthesize the CDK app once per session, exactly as `python infra/app.py` does, into a temporary folder.

The layer's content does not change the template (only its asset hash), so a stand-in layer folder is used:
no PyPI access, no dependency on build/layer. Synthesis runs cdk-nag; a non-zero exit means an unacknowledged
finding or a broken app.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
JSII_QUIET = {
    # jsii's Node end-of-life banner (takes the major versions to silence) and the older deprecation one.
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
}
os.environ.update(JSII_QUIET)  # before aws_cdk is first imported in this process


@dataclass
class Synth:
    outdir: Path
    template: dict[str, Any]
    output: str  # stdout + stderr of the synthesis

    @property
    def template_path(self) -> Path:
        return self.outdir / "MarketPay.template.json"

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == resource_type}

    def logical_id(self, resource_type: str, path: str) -> str:
        """The one resource of this type whose logical id is the construct path (no slashes) plus CDK's hash."""
        pattern = re.compile(rf"^{re.escape(path)}[0-9A-F]{{8}}$")
        found = [lid for lid in self.of_type(resource_type) if pattern.match(lid)]
        assert len(found) == 1, f"{resource_type} {path}: {found}"
        return found[0]

    def props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {})


def run_app(outdir: Path, layer_dir: Path, context: dict[str, Any] | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **JSII_QUIET,
        "CDK_OUTDIR": str(outdir),
        "MARKETPAY_LAYER_DIR": str(layer_dir),
        "AWS_REGION": "us-east-1",
    }
    env.pop("CDK_CONTEXT_JSON", None)
    if context:
        env["CDK_CONTEXT_JSON"] = json.dumps(context)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "infra" / "app.py")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def stand_in_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.constructs.functions import LAYERS

    root = tmp_path_factory.mktemp("layer")
    for name in LAYERS:
        (root / name / "python").mkdir(parents=True)
        (root / name / "python" / "README").write_text(f"stand-in for build/layer/{name} in infra tests\n")
        (root / name / ".stamp").write_text("{}\n")  # as scripts/build_layer.py leaves it
    return root


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory, stand_in_layer: Path) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    done = run_app(outdir, stand_in_layer)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return Synth(outdir, json.loads((outdir / "MarketPay.template.json").read_text()), output)
