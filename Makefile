# Two commands a newcomer needs: `make run` and `make test`. Each creates the virtual
# environment and installs the project (pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test bench clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	@ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so' || { \
	  echo 'Open3D needs the system library libusb-1.0, which is not installed.'; \
	  echo 'Install it with: sudo apt-get install libusb-1.0-0  (Debian/Ubuntu), sudo dnf install libusb1 (Fedora)'; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,batch]'
	@touch $@

run: $(VENV)/.installed
	$(PY) -m mvs.run $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,batch,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m mvs.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
