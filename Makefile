# Two commands a newcomer needs: `make run` (the demo) and `make test`. Each creates the virtual
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

# The demo: a synthetic room rendered once (300 frames of 320x240), reconstructed by the product's own
# pipeline from its images (monocular tracking with the sensor's scale, learned plane-sweep
# depth, TSDF fusion), then scored against the room's true mesh and camera path.
DEMO_ROOM := sequences/synthetic/demo
DEMO_OUT := outputs/demo

$(DEMO_ROOM): | $(VENV)/.installed
	$(PY) -m mvs.synth --seed 0 --width 320 --height 240 --out $(DEMO_ROOM)

run: $(VENV)/.installed
ifeq ($(ARGS),)
	@$(MAKE) --no-print-directory $(DEMO_ROOM)
	$(PY) -m mvs.run --sequence $(DEMO_ROOM) --poses track --scale sensor --depth learned --out $(DEMO_OUT)
	$(PY) -m mvs.eval --out $(DEMO_OUT)
else
	$(PY) -m mvs.run $(ARGS)
endif

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,batch,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m mvs.bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
