# Two entry points on a fresh Debian machine (run as root, or with sudo for apt):
#   make run    install everything, then run the main job on the default data (Fashion-MNIST)
#   make test   install everything, then run the test suite
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev dataset-fashion-mnist g++ chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install apt pip run test bench-data bench gpu-check

apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); fi

pip:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,ffcv,dali,triton]'

install: apt pip

# The main job: the default recipe (Fashion-MNIST, 40% instance noise, small CNN; CPU,
# run times in BENCHMARKS.md), LaCoL beside its fair control (CE on the same strong views), same data, epochs
# and seed; then the label audit of the LaCoL run.
run: install
	lacol compare --config configs/fashion_mnist.yaml --seeds 0
	lacol audit --run runs/fashion_mnist-lacol-instance0.4-s0 --top 10 \
	  --html runs/fashion_mnist-lacol-instance0.4-s0/review.html

test: install
	$(PYTHON) -m pytest -q

bench-data: install
	test -f data/bench_clothing1m/noisy_label_kv.txt || \
	  lacol-convert fmnist-clothing1m --out data/bench_clothing1m --num-train 2048
	test -f data/bench_clothing1m/ffcv/clothing1m_noisy_train.beton || \
	  lacol-convert clothing1m --to ffcv --root data/bench_clothing1m --out data/bench_clothing1m/ffcv --splits noisy_train

bench: bench-data
	lacol-bench loader --root data/bench_clothing1m --backends peer,torch,ffcv
	lacol-bench convert --root data/bench_clothing1m

# On a CUDA machine (offline is fine; nothing is installed): the CUDA tests and the GPU benchmarks
# (step ceiling, loaders with views on the GPU, train/step ratio, kernels fp32 and bf16) into OUT.
# README, "The GPU check", says how to ship the DALI and FFCV wheels there. Without CUDA: exit 2.
OUT ?= gpu_check_out
gpu-check:
	$(PYTHON) -m tools.gpu_check $(OUT)
