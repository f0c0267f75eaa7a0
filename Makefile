# Entry points for people and CI. Each target installs what it needs first.
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)

.PHONY: all deps configure build demo demo-down test test-asan bench clean

all: build

deps:
	scripts/install-deps.sh

configure: deps
	@if [ ! -f $(BUILD)/build.ninja ]; then \
	  cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE); fi

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Local demo: a node with three pods as network namespaces, the mesh in front.
demo: build
	test/bed/demo.sh run

# Removes everything a demo made (also done on Ctrl-C).
demo-down:
	test/bed/demo.sh down

# Bench suite (bench/README.md): results in bench/results/<timestamp>/. QUICK=1: short mode;
# PROFILE=1: perf-record ztunnel; SCENARIOS=a,b: choose scenarios.
bench: build
	WEFT_BUILD=$(abspath $(BUILD)) python3 bench/run.py $(if $(QUICK),--quick) \
	  $(if $(PROFILE),--profile) $(if $(SCENARIOS),--scenarios $(SCENARIOS))

# The whole test suite through ctest: unit + root integration tests, then the
# unit tests again under AddressSanitizer/UBSan (ASAN=0 skips that pass).
ASAN ?= 1
test: build
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 600
	@if [ "$(ASAN)" = "1" ]; then $(MAKE) --no-print-directory test-asan; fi

# Unit tests under AddressSanitizer and UBSan, in a build tree of their own.
test-asan: deps
	@if [ ! -f build-asan/build.ninja ]; then \
	  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DWEFT_SANITIZE=ON; fi
	cmake --build build-asan -j $(JOBS) --target weft_unit_tests
	cd build-asan && ctest --output-on-failure -L unit

clean:
	rm -rf $(BUILD) build-asan
