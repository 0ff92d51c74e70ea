# immunostrat: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= data/demo
SUBJECTS ?= 500

.PHONY: demo test lint typecheck imports check install demo-model datadict bench clean

$(BIN)/immunostrat: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# setuptools' editable finder (needed to map `immunostrat` onto pipelines/, schemas/, models/) always ends with a
	@# generic note to beware of folders named like the package. None is (tests/test_layout.py holds that), so
	@# that one note is filtered by its text; every other warning still shows.
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/immunostrat

## demo: set up, generate a synthetic cohort, run `stratify` (ephemeral Prefect) and `monitor` (follow-up, local)
demo: install
	$(BIN)/immunostrat synth --subjects $(SUBJECTS) --seed 7 --out $(DEMO)/input
	$(BIN)/immunostrat stratify --labs $(DEMO)/input/labs.parquet --subjects $(DEMO)/input/subjects.parquet \
		--visits $(DEMO)/input/visits.parquet --out $(DEMO)/runs --demo-key
	$(BIN)/immunostrat monitor --engine local --labs $(DEMO)/input/labs.parquet $(DEMO)/input/labs_followup.parquet \
		--subjects $(DEMO)/input/subjects.parquet --visits $(DEMO)/input/visits.parquet \
		--events $(DEMO)/input/events.parquet --strata $(DEMO)/runs --as-of 2026-10-31 --out $(DEMO)/monitor --demo-key

## test: lint, type-check, the import contract, data-dictionary drift check, then the test suite
test: install lint typecheck imports
	$(BIN)/python -m immunostrat.reporting.datadict --check
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy pipelines schemas benchmarks

## imports: the layers and forbidden imports declared in pyproject.toml ([tool.importlinter]); no cycles
imports: install
	$(BIN)/lint-imports

## demo-model: retrain the shipped demo model reproducibly (fixed seeds, full training profile: 5x5 CV grouped
## by site, Platt calibration, 1,000 bootstrap resamples) and make it champion; earlier versions stay registered
demo-model: install
	$(BIN)/immunostrat synth --subjects 4000 --seed 42 --out data/train
	$(BIN)/immunostrat train --engine local --labs data/train/labs.parquet --subjects data/train/subjects.parquet \
		--outcomes data/train/outcomes.parquet --as-of 2026-11-01 --seed 0 --cv-folds 5 --cv-repeats 5 --alias champion

datadict: install
	$(BIN)/python -m immunostrat.reporting.datadict --out docs/output.md

bench: install
	$(BIN)/python benchmarks/run.py --subjects 100000

clean:
	rm -rf $(DEMO) data/train build *.egg-info .pytest_cache .mypy_cache .ruff_cache
