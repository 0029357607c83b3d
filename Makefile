# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/grokking.py --log-dir runs/grokking
	$(VENV)/bin/phasetrain report runs/grokking

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs
	$(PY) -m pytest -q

# backpack-for-pytorch pulls a PyPI torchvision that does not match the local torch build and
# breaks `import lightning`; the benchmarks do not need torchvision, so it is removed again.
bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench]"
	$(PY) -m pip uninstall --quiet -y torchvision
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/curvature.py
	$(PY) benchmarks/curvature_floor.py
	$(PY) benchmarks/detection.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
