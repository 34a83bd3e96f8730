# MarketPay: every target sets itself up (virtual environment, packages, layer, template) on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: help run test test-chaos chromium synth lint demo chaos bench openapi clean

help:            ## this menu
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# One layer each (scripts/build_layer.py); a layer whose pins did not change is only re-stamped, not rebuilt.
LAYERS := base psp recon
build/layer/%/.stamp: $(STAMP) scripts/build_layer.py pyproject.toml
	$(PY) scripts/build_layer.py --layer $*

cdk.out/MarketPay.template.json: $(LAYERS:%=build/layer/%/.stamp) $(shell find infra functions -name '*.py' 2>/dev/null) cdk.json
	$(PY) infra/app.py

synth: cdk.out/MarketPay.template.json  ## synthesize the CDK app into cdk.out (offline); prints each function's size
	@$(PY) scripts/function_sizes.py cdk.out

run: synth  ## the whole system locally: API on 127.0.0.1:3000, AWS (moto) on :5000, PSP sandbox on :12111 (Adyen's on :12112 with MARKETPAY_PSP_ROUTING naming adyen)
	$(PY) -m local

test: synth chromium  ## every test
	$(PY) -m pytest -n 2 --dist loadgroup --durations=25

# The recon reports' HTML page is checked in a real headless browser (tests/recon/test_report_html.py): Debian's
# chromium package, installed when missing (needs root, as in CI and the dev container).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test-chaos: synth  ## only the chaos tests of make test: 3 seeds x 100 orders and the checker's mutation tests
	$(PY) -m pytest -m chaos -n 2 tests/chaos

# Advisories accepted for now, one a line with its reason (.pip-audit-ignore); --strict fails on any package the
# service could not look up, so an unreachable service is a failure, not a silent pass.
AUDIT_IGNORES := $(shell sed -n 's/^\([A-Za-z0-9-]\{1,\}\).*/--ignore-vuln \1/p' .pip-audit-ignore)

lint: $(STAMP) synth  ## ruff, cfn-lint, and pip-audit of the installed runtime + dev packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/cfn-lint cdk.out/MarketPay.template.json
ifeq ($(AUDIT),skip)
	@echo "pip-audit: SKIPPED (AUDIT=skip): no advisory was checked"
else
	$(PY) -m pip freeze --exclude-editable > build/audited-requirements.txt
	$(VENV)/bin/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
		-r build/audited-requirements.txt $(AUDIT_IGNORES)
endif

demo: synth  ## storefront demo against a running `make run` (or its own stack): N=100
	$(PY) -m verification.demo --orders $(or $(N),100)

chaos: synth  ## seeded fault-injection runs: SEEDS="1 2 3" ORDERS=2000 OUTAGE=AT:SECONDS (a Stripe outage, Adyen failover)
	@rc=0; for seed in $(or $(SEEDS),$(SEED),1 2 3); do \
		$(PY) -m verification.chaos --seed $$seed --orders $(or $(ORDERS),2000) \
			$(if $(OUTAGE),--stripe-outage $(OUTAGE)) || rc=1; done; exit $$rc

bench: synth  ## benchmarks: cost model, local throughput, reconciliation, cold start
	$(PY) benchmarks/cost_model.py
	$(PY) benchmarks/local_throughput.py
	$(PY) benchmarks/recon_bench.py
	$(PY) benchmarks/cold_start.py

openapi: $(STAMP)  ## regenerate docs/openapi.json from the code
	$(PY) -c "from functions.payment.api import openapi_document; print(openapi_document())" > docs/openapi.json

clean:
	rm -rf cdk.out build .pytest_cache
