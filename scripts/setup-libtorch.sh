#!/usr/bin/env bash
# Provisions libtorch 2.11.0 (the version tch 0.24 binds) from the Python package index into a cache
# outside the repository, and points the repository's `.libtorch` link at it. Idempotent: a finished tree
# carries a `.complete` stamp and is reused.
#
#   scripts/setup-libtorch.sh          lean CPU tree (~490 MB): headers, libc10, libtorch_cpu, libgomp,
#                                      plus libcudart/libcupti, which libtorch_cpu.so lists as DT_NEEDED
#   scripts/setup-libtorch.sh cuda     CUDA tree: every library of the torch wheel, for linking a binary that
#                                      runs on a GPU machine with that machine's own CUDA libraries
set -euo pipefail

TORCH_VERSION=2.11.0
# torch 2.11.0 pins cuda-toolkit==13.0.2, whose extras pin these runtime wheels.
CUDART_SPEC='nvidia-cuda-runtime==13.0.96.*'
CUPTI_SPEC='nvidia-cuda-cupti==13.0.85.*'
FLAVOUR=${1:-cpu}
CACHE=${RIFLE_CACHE:-$HOME/.cache/rifle}
WHEELS=$CACHE/wheels
TREE=$CACHE/libtorch-$TORCH_VERSION-$FLAVOUR
REPO=$(cd "$(dirname "$0")/.." && pwd)
LINK=$REPO/.libtorch
[ "$FLAVOUR" = cpu ] || [ "$FLAVOUR" = cuda ] || { echo "usage: $0 [cpu|cuda]" >&2; exit 2; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found; install Python 3 with pip" >&2; exit 1; }
"$PYTHON" -m pip --version >/dev/null 2>&1 || { echo "setup: '$PYTHON -m pip' does not work; install pip" >&2; exit 1; }

# pip matches manylinux tags exactly, so list the ones these wheels are published under.
PLATFORMS=()
for n in 17 25 27 28; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64)
fetch() { # fetch SPEC: download one wheel (no dependencies) into the wheel cache
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp "${PLATFORMS[@]}" -d "$WHEELS" "$1"
}

if [ ! -f "$TREE/.complete" ]; then
  mkdir -p "$WHEELS"
  ls "$WHEELS"/torch-$TORCH_VERSION-*.whl >/dev/null 2>&1 || { echo "setup: downloading torch==$TORCH_VERSION (530 MB) from PyPI"; fetch "torch==$TORCH_VERSION"; }
  ls "$WHEELS"/nvidia_cuda_runtime-*.whl >/dev/null 2>&1 || fetch "$CUDART_SPEC"
  ls "$WHEELS"/nvidia_cuda_cupti-*.whl >/dev/null 2>&1 || fetch "$CUPTI_SPEC"

  echo "setup: building $TREE"
  work=$(mktemp -d "$CACHE/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  if [ "$FLAVOUR" = cpu ]; then
    members=('torch/include/*' torch/lib/libc10.so torch/lib/libtorch_cpu.so torch/lib/libgomp.so.1)
  else
    members=('torch/include/*' 'torch/lib/*')
  fi
  "$PYTHON" - "$work" "$WHEELS"/torch-$TORCH_VERSION-*.whl "${members[@]}" <<'PY'
import fnmatch, os, sys, zipfile
out, wheel, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            z.extract(name, out)
PY
  mkdir -p "$work/libtorch"
  mv "$work/torch/include" "$work/torch/lib" "$work/libtorch/"
  for w in "$WHEELS"/nvidia_cuda_runtime-*.whl "$WHEELS"/nvidia_cuda_cupti-*.whl; do
    "$PYTHON" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    base = n.rsplit("/", 1)[-1]
    if base in ("libcudart.so.13", "libcupti.so.13"):
        open(sys.argv[2] + "/" + base, "wb").write(z.read(n))' "$w" "$work/libtorch/lib"
  done
  if [ "$FLAVOUR" = cpu ]; then
    # torch-sys always links -ltorch; the wheel's libtorch.so needs libtorch_cuda.so (470 MB). This linker
    # script stands in for it and resolves to libtorch_cpu.so only.
    echo 'INPUT(AS_NEEDED(libtorch_cpu.so))' > "$work/libtorch/lib/libtorch.so"
  fi
  echo "$TORCH_VERSION" > "$work/libtorch/build-version"   # torch-sys's version check reads this
  rm -rf "$TREE"
  mv "$work/libtorch" "$TREE"
  touch "$TREE/.complete"
fi

# RIFLE_LINK=0 leaves .libtorch alone: `make gpu-bundle` builds a CUDA binary beside a CPU checkout.
if [ "${RIFLE_LINK:-1}" = 1 ]; then
  ln -sfn "$TREE" "$LINK"
  echo "setup: libtorch $TORCH_VERSION ($FLAVOUR) at $TREE ($(du -sh "$TREE" | cut -f1)), linked as .libtorch"
else
  echo "setup: libtorch $TORCH_VERSION ($FLAVOUR) at $TREE ($(du -sh "$TREE" | cut -f1))"
fi
