# rifle — every target installs what it needs (libtorch from PyPI into a cache, assets from Debian and PyPI).
# The cache lives outside the repository: RIFLE_CACHE (default ~/.cache/rifle).
RIFLE_CACHE ?= $(HOME)/.cache/rifle
export RIFLE_CACHE
CARGO ?= cargo
CUDA ?=
RIFLE := target/debug/rifle

.PHONY: setup build test demo paper-mlp clean-runs

## setup: libtorch 2.11.0 from the PyPI torch wheel into $(RIFLE_CACHE) (CUDA=1: the CUDA route)
setup:
	@scripts/setup-libtorch.sh $(if $(CUDA),cuda,cpu)

## build: the rifle binary and the example dynamic plugins
build: setup
	$(CARGO) build --workspace

## test: every test, on mock datasets (builds the example plugins the tests load)
test: build
	$(CARGO) test --workspace --no-fail-fast

clean-runs:
	rm -rf runs

## paper-mlp: the paper's MLP-oracle study (§4.6.2), 5 seeds, on the CPU; prints the table beside the paper's values
paper-mlp: build
	$(RIFLE) sweep pipelines/paper/mlp/teachers.sweep.yaml
	$(RIFLE) sweep pipelines/paper/mlp/transfer.sweep.yaml
	$(RIFLE) report runs/paper-mlp/transfer --reference pipelines/paper/mlp/paper-values.yaml
