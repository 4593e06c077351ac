# mpfota: every target installs what it needs (make setup is idempotent and quick once done).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.mpfota-setup
MMDC  := $(VENV)/node/node_modules/.bin/mmdc
PORT  ?=
APT_PACKAGES := mosquitto nginx openssl postgresql chromium lua5.4

.PHONY: setup demo test bench deploy sweep fuzz mutate lint clean diagrams

setup: $(STAMP) apt deps/umqtt/simple.py

$(STAMP): host_tools/pyproject.toml host_tools/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r host_tools/requirements.txt
	$(PY) -m pip install -q --no-deps -e host_tools
	touch $@

# Debian packages the tests use; apt-get update runs only when something is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# umqtt.simple exists on PyPI only as an sdist pip cannot build: fetch it by name, version and sha256.
deps/umqtt/simple.py: $(STAMP) host_tools/mpfota_host/fetchdeps.py
	$(PY) -m mpfota_host.fetchdeps deps

demo: setup
	$(VENV)/bin/mpfota demo

# Ends on pytest's last line; the power-cut figures are in build/reliability.txt, and one
# line of them is in pytest's summary (tests/conftest.py).
test: setup $(MMDC)
	$(PY) -m pytest tests

# The renderer of the mermaid diagrams in docs/ (npm's mermaid-cli, with Debian's chromium),
# then the test that renders them all (make test installs it too, so the test runs there).
$(MMDC): | apt
	PUPPETEER_SKIP_DOWNLOAD=1 npm install -s --prefix $(VENV)/node --no-audit --no-fund \
	  @mermaid-js/mermaid-cli@11.17.0

diagrams: setup $(MMDC)
	$(PY) -m pytest -q tests/host/test_diagrams.py

# The whole power-cut sweep (every cut point, every update kind, both layouts, nested cuts).
sweep: setup
	$(VENV)/bin/mpfota sweep --full --report build/reliability-full.txt

# Longer fuzzing runs than the bounded ones in make test.
MPFOTA_FUZZ_EXAMPLES ?= 5000
fuzz: setup
	MPFOTA_FUZZ_EXAMPLES=$(MPFOTA_FUZZ_EXAMPLES) $(PY) -m pytest -q tests/host/test_fuzz_parsers.py \
	  tests/host/test_fuzz_http_client.py tests/host/test_fuzz_package.py

# Deliberate breakages of the safety checks (tests/mutants.py), each in a scratch copy of the
# repository: every one must make its tests fail (docs/reliability.md, "make mutate").
mutate: setup
	$(PY) tests/mutate.py

bench: setup
	$(VENV)/bin/mpfota bench

deploy: setup
	@test -n "$(PORT)" || { echo "usage: make deploy PORT=/dev/ttyUSB0 (or the pty printed by 'mpfota board serve')"; exit 2; }
	$(VENV)/bin/mpfota deploy --port $(PORT)

lint: setup
	$(VENV)/bin/ruff check --config host_tools/pyproject.toml host_tools tests

clean:
	rm -rf $(VENV) deps build .pytest_cache
