# Quick start: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp

PEERS  := .venv-peers

.PHONY: demo test lint bench peers bench-offchip clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP)-base: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m serenity.schedulers.warmup
	touch $@

$(STAMP)-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[test,ilp,ray,torch]"
	$(BIN)/python -m serenity.schedulers.warmup
	touch $@

demo: $(STAMP)-base
	@mkdir -p out
	@for f in examples/*.tflite; do \
	  o=out/$$(basename $$f .tflite).scheduled.tflite; \
	  echo "== $$f"; \
	  $(BIN)/serenity schedule $$f -o $$o && $(BIN)/serenity verify $$f $$o || exit 1; \
	done
	$(BIN)/serenity optimize examples/nas_cells_float.tflite -o out/nas_cells_float.optimized.tflite --embed-plan
	$(BIN)/serenity verify examples/nas_cells_float.tflite out/nas_cells_float.optimized.tflite
	$(BIN)/serenity optimize examples/stem/mobilenet_v2_035_96_int8.tflite -o out/mobilenet_v2_035_96_int8.tiled.tflite --embed-plan
	$(BIN)/serenity verify examples/stem/mobilenet_v2_035_96_int8.tflite out/mobilenet_v2_035_96_int8.tiled.tflite
	$(BIN)/serenity bench --quick --plot out/bench-quick.png --csv out/bench-quick.csv

test: $(STAMP)-test
	$(BIN)/python -m pytest -q

lint: $(STAMP)-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)-test
	$(BIN)/python benchmarks/bench_scheduler.py

# Peer tools the benchmarks compare against, in a venv of their own (not needed by the tests).
$(PEERS)/.stamp:
	$(PYTHON) -m venv $(PEERS) || python3 -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet tigris-ml==0.12.1
	touch $@

peers: $(PEERS)/.stamp

bench-offchip: $(STAMP)-test $(PEERS)/.stamp
	$(BIN)/python benchmarks/bench_offchip.py

clean:
	rm -rf $(VENV) $(PEERS) build src/*.egg-info
