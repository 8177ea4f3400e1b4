# Two commands do all the set-up on a fresh machine:
#   make demo   - virtual environment, install, compress + decompress a sample text
#   make test   - the test suite (real model, small inputs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(OUT)
	$(VENV)/bin/nacrith compress examples/sample.txt -o $(OUT)/sample.txt.nc --force
	$(VENV)/bin/nacrith info $(OUT)/sample.txt.nc
	$(VENV)/bin/nacrith decompress $(OUT)/sample.txt.nc -o $(OUT)/sample.txt --force
	cmp examples/sample.txt $(OUT)/sample.txt && echo "round trip verified: $(OUT)/sample.txt is identical to examples/sample.txt"

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT) .pytest_cache
