PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest CMake plugins/CMakeLists.txt declares (cmake_minimum_required; JetPack 6 ships 3.22): the tests build
# with it as well as with the machine's CMake. From the package index's cmake wheel, into a folder of its own so
# that it never shadows the machine's cmake on PATH.
CMAKE_OLDEST_VERSION := 3.22.1
CMAKE_OLDEST := $(VENV)/cmake-oldest/cmake/data/bin/cmake

.PHONY: demo test venv plugin trt-contract clean

# torch first, pinned to the CPU wheel the machine provides; then the project.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(CMAKE_OLDEST): $(STAMP)
	rm -rf $(VENV)/cmake-oldest
	$(PY) -m pip install -q --target $(VENV)/cmake-oldest cmake==$(CMAKE_OLDEST_VERSION)
	touch $(CMAKE_OLDEST)

venv: $(STAMP) $(CMAKE_OLDEST)

demo: $(STAMP)
	$(PY) scripts/demo.py

# Two workers, each taking whole test files (so module- and session-scoped builds happen once):
# about 9 minutes on 2 cores instead of 12.
test: $(STAMP) $(CMAKE_OLDEST)
	$(PY) -m pytest -q -n 2 --dist loadfile

# Builds plugins/build/libdeformrt_plugin.so and libdeformrt_kernels.so (needs nvcc, CMake and
# TensorRT headers: TENSORRT_ROOT=... or TENSORRT_INCLUDE_DIR=... in the environment).
plugin: $(STAMP)
	$(VENV)/bin/deformrt build-plugin $(if $(TENSORRT_ROOT),--tensorrt-root $(TENSORRT_ROOT)) $(if $(TENSORRT_INCLUDE_DIR),--tensorrt-include-dir $(TENSORRT_INCLUDE_DIR))

# The TensorRT-contract harness alone (also part of `make test`). With TENSORRT_ROOT=<TensorRT install> it also
# runs against that TensorRT's libnvinfer, with the CUDA kernels when a GPU is present.
trt-contract: $(STAMP)
	$(if $(TENSORRT_ROOT),TENSORRT_ROOT=$(TENSORRT_ROOT)) $(PY) -m pytest -q -rs tests/test_trt_contract.py

clean:
	rm -rf $(VENV) plugins/build
