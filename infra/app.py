"""CDK app entry point: `python infra/app.py` (or `cdk synth`) writes cdk.out/MarketPay.template.json offline.

Settings come from CDK context (`cdk synth -c key=value`, or CDK_CONTEXT_JSON) with defaults in infra/names.py;
the folder of the layers (build/layer, holding <name>/python) may also be given as MARKETPAY_LAYER_DIR (tests
point it at a stand-in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parent
REPO_ROOT = INFRA_DIR.parent
# Run as a script, Python puts infra/ first on sys.path, where infra/constructs/ would shadow the `constructs`
# library: import from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != INFRA_DIR]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra import names  # noqa: E402
from infra.constructs.functions import LAYERS  # noqa: E402
from infra.psp_context import PspContextError, from_context  # noqa: E402
from infra.stack import MarketPayStack, StackSettings  # noqa: E402

# Feature flags live here, not in cdk.json, so `python infra/app.py` and `cdk synth` build the same template.
FEATURE_FLAGS = {
    # Access-log delivery through a bucket policy: the ACL alternative cannot coexist with BucketOwnerEnforced.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


def _flag(value: object) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes"}


def build_app() -> cdk.App:
    app = cdk.App(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"), context=FEATURE_FLAGS)
    context = app.node.try_get_context
    layer_dir = Path(context(names.CTX_LAYER_DIR) or os.environ.get(names.ENV_LAYER_DIR) or names.DEFAULT_LAYER_DIR)
    if not layer_dir.is_absolute():
        layer_dir = REPO_ROOT / layer_dir
    missing = [str(layer_dir / name / "python") for name in LAYERS if not (layer_dir / name / "python").is_dir()]
    if missing:
        sys.exit(f"layer folders {missing} are missing: run `python scripts/build_layer.py` first")
    try:
        psp = from_context(context)
    except PspContextError as error:
        sys.exit(str(error))
    settings = StackSettings(
        repo_root=REPO_ROOT,
        layer_dir=layer_dir,
        psp_key_parameter=context(names.CTX_PSP_KEY_PARAMETER) or names.DEFAULT_PSP_KEY_PARAMETER,
        destroy_on_removal=_flag(context(names.CTX_DESTROY)),
        webhook_secret_parameter=context(names.CTX_WEBHOOK_SECRET_PARAMETER) or names.DEFAULT_WEBHOOK_SECRET_PARAMETER,
        psp=psp,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("CDK_DEFAULT_REGION") or names.DEFAULT_REGION
    # Account-agnostic: the account comes from the credentials at deploy time.
    MarketPayStack(app, names.STACK_NAME, settings=settings, env=cdk.Environment(region=region))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app


if __name__ == "__main__":
    build_app().synth()
