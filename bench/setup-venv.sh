#!/usr/bin/env bash
# The PyTorch side of `make bench`: a virtual environment with torch 2.11.0 and torchvision 0.26 under
# ${RIFLE_CACHE:-~/.cache/rifle}/bench-venv, never system-wide. Idempotent (a `.complete` stamp).
#
# PyPI has one torch 2.11.0 wheel for Linux x86_64, the CUDA 13 build; `pip install torch` would also pull
# triton, cuda-bindings and the whole CUDA toolkit (~3 GB). The wheel's Python extension links
# libtorch_cuda.so, which lists cuDNN, cuBLAS, cuFFT, cuRAND, cuSPARSE(Lt), cuFile, NCCL and NVSHMEM as
# DT_NEEDED, so `import torch` fails without them even on a CPU-only machine. This script installs torch
# with --no-deps from the wheel cache plus exactly the libraries the loader needs (pins from torch's and
# cuda-toolkit 13.0.2's metadata) and the pure-Python dependencies; no triton, no compiler, no cuSOLVER.
set -euo pipefail

CACHE=${RIFLE_CACHE:-$HOME/.cache/rifle}
VENV=$CACHE/bench-venv
WHEELS=$CACHE/wheels
PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "$0")/.." && pwd)

if [ -f "$VENV/.complete" ]; then
  echo "bench: venv at $VENV ($(du -sh "$VENV" | cut -f1))"
  exit 0
fi

# The torch wheel is cp311; scripts/setup-libtorch.sh downloads it (make setup).
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "bench: the cached torch wheel is for CPython 3.11; set PYTHON to a python3.11" >&2; exit 1; }
ls "$WHEELS"/torch-2.11.0-*.whl >/dev/null 2>&1 || "$REPO/scripts/setup-libtorch.sh" cpu

NATIVE=(
  'nvidia-cuda-runtime==13.0.96.*' 'nvidia-cuda-cupti==13.0.85.*'
  'nvidia-cublas==13.1.0.3.*' 'nvidia-cufft==12.0.0.61.*' 'nvidia-cufile==1.15.1.6.*'
  'nvidia-curand==10.4.0.35.*' 'nvidia-cusparse==12.6.3.3.*' 'nvidia-nvjitlink==13.0.88.*'
  'nvidia-cudnn-cu13==9.19.0.56' 'nvidia-cusparselt-cu13==0.8.0' 'nvidia-nccl-cu13==2.28.9'
  'nvidia-nvshmem-cu13==3.4.5'
)
PURE=(filelock 'typing-extensions>=4.10.0' 'setuptools<82' 'sympy>=1.13.3' 'networkx>=2.5.1' jinja2 'fsspec>=0.8.5'
  numpy pillow)

started=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check --quiet "$@"; }
# torch declares the full CUDA toolkit and triton; leaving them out on purpose, so no conflict warnings.
# The native wheels are kept in the wheel cache, so a rebuilt venv downloads nothing.
mkdir -p "$WHEELS"
pip download --no-deps --only-binary=:all: -d "$WHEELS" "${NATIVE[@]}"
pip install --no-warn-conflicts --no-deps --find-links "$WHEELS" --no-index "$WHEELS"/torch-2.11.0-*.whl "${NATIVE[@]}"
pip install --no-warn-conflicts "${PURE[@]}"
pip install --no-warn-conflicts --no-deps 'torchvision==0.26.*'
"$VENV/bin/python" - <<'PY'
import torch, torchvision
assert torch.__version__.startswith("2.11.0"), torch.__version__
x = torch.randn(2, 3, 32, 32)
torchvision.models.resnet18(num_classes=4)(x).sum().backward()
print(f"bench: torch {torch.__version__}, torchvision {torchvision.__version__} import and train on the CPU")
PY
touch "$VENV/.complete"
echo "bench: venv at $VENV ($(du -sh "$VENV" | cut -f1)) installed in $(( $(date +%s) - started ))s"
