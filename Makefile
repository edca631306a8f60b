# Two commands matter: `make run` (sandbox) and `make test`. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
IDP    := tests/accounts/oidc_provider
AXE    := tests/browser/axe

.PHONY: run test lint bench-mint bench-audit bench-load clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

# The OpenID Connect provider the SSO tests start (npm's oidc-provider; needs Node.js 20+).
# npm ci writes node_modules/.package-lock.json, so this reinstalls only when the lock changes.
$(IDP)/node_modules/.package-lock.json: $(IDP)/package.json $(IDP)/package-lock.json
	cd $(IDP) && npm ci --no-audit --no-fund
	touch $@

# axe-core for the browser tests' accessibility checks (pinned by its package-lock.json).
$(AXE)/node_modules/.package-lock.json: $(AXE)/package.json $(AXE)/package-lock.json
	cd $(AXE) && npm ci --no-audit --no-fund
	touch $@

## Sandbox: embedded SQLite, the stand-in Requesty, demo users printed. Nothing leaves this machine.
run: $(VENV)/.installed
	DEBUG=true PORTAL_SANDBOX=true REQUESTY_BASE_URL=http://127.0.0.1:8099 \
	REQUESTY_ADMIN_TOKEN=sandbox-admin-token DATABASE_URL=sqlite:///db.sqlite3 \
	$(PY) manage.py sandbox

## The whole suite (unit, view, browser). DATABASE_URL=postgres://... runs it on PostgreSQL.
test: $(VENV)/.installed-dev $(IDP)/node_modules/.package-lock.json $(AXE)/node_modules/.package-lock.json
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## Benchmarks (bench/README.md): gunicorn + PostgreSQL ($DATABASE_URL's server) on loopback.
## What the portal adds to a mint; 8, 16, 32 users minting continuously against a 1 s Requesty.
bench-mint: $(VENV)/.installed-dev
	$(PY) bench/mint.py

## Pages against a bare view, the export against COPY, verify_audit's rate, at 1,000,000 events.
bench-audit: $(VENV)/.installed-dev
	$(PY) bench/audit.py

## 50 simulated users for 30 s against gunicorn + PostgreSQL on loopback, 5% upstream faults.
bench-load: $(VENV)/.installed-dev
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache $(IDP)/node_modules $(AXE)/node_modules
