#!/usr/bin/env bash
# The GPU check, for a machine like the ones this project is checked on (one NVIDIA H200; Python with
# torch 2.11.0+cu130; no Rust, no network). Run from the repository root, with the bundle `make gpu-bundle`
# made on a CPU machine in target/gpu-bundle (a release `rifle` linked against the CUDA libtorch tree,
# stripped; the bundle with this repository's tracked files stays under 64 MiB):
#
#   bench/gpu-check.sh             CUDA detected; the mock pipeline trains on the GPU; ResNet-50 @ 224 batch 32
#                                  training img/s in fp32, autocast fp16 and bf16, (PyTorch only) channels-last,
#                                  rifle and PyTorch eager interleaved, 3 pairs each; ~5 minutes on an H200
#   bench/gpu-check.sh --dry-run   the same script on the CPU with tiny sizes (checks the bundle, the library
#                                  path and the runner; measures nothing); PYTHON= a Python with torch 2.11
#
# rifle uses the GPU machine's own torch libraries: torch/lib of $PYTHON's torch goes on LD_LIBRARY_PATH
# (torch's libraries find their NVIDIA libraries by their own RUNPATH). Results go to stdout and to
# $OUT/gpu-check.md (OUT defaults to target/gpu-check).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${RIFLE_GPU_BUNDLE:-$REPO/target/gpu-bundle}
RIFLE=$BUNDLE/rifle
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$REPO/target/gpu-check}
DRY=0
[ "${1:-}" = --dry-run ] && DRY=1

[ -x "$RIFLE" ] || { echo "gpu-check: $RIFLE is missing; build it on a CPU machine with 'make gpu-bundle'" >&2; exit 1; }
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
  || { echo "gpu-check: $PYTHON cannot import torch; set PYTHON to a Python with torch 2.11" >&2; exit 1; }
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd "$RIFLE" | grep -q 'not found'; then
  echo "gpu-check: libraries rifle needs are missing from $TORCH_LIB:" >&2
  ldd "$RIFLE" | grep 'not found' >&2
  exit 1
fi
mkdir -p "$OUT"
{
  echo "rifle: $("$RIFLE" --version); torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
  echo "libtorch used by rifle: $(ldd "$RIFLE" | grep -E 'libtorch_(cpu|cuda)' | awk '{print $3}' | tr '\n' ' ')"
} | tee "$OUT/environment.txt"

if [ $DRY = 1 ]; then
  exec "$PYTHON" "$REPO/bench/run.py" --rifle "$RIFLE" --python "$PYTHON" --device cpu --only gpu --quick --pairs 1 \
    --out "$OUT/gpu-check.md"
fi
"$PYTHON" "$REPO/bench/run.py" --rifle "$RIFLE" --python "$PYTHON" --device cuda --only gpu --pairs 3 --out "$OUT/gpu-check.md"
