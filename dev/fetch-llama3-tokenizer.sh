#!/usr/bin/env bash
# Fetch Meta's Llama 3 tokenizer.model (the tiktoken BPE file) into
# .cache/llama3/tokenizer.model, relative to the repository root.
#
# The file ships inside the `llama-models` wheel on PyPI, so the only thing
# needed is python3 with pip (no virtualenv, nothing is installed). The script
# is idempotent: if the file is already there with the expected sha256 it does
# nothing.
#
# Usage: dev/fetch-llama3-tokenizer.sh
set -euo pipefail

EXPECTED_SHA256="82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
LLAMA_MODELS_VERSION="0.3.0"
MEMBER="llama_models/llama3/tokenizer.model"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
DEST_DIR=".cache/llama3"
DEST="$DEST_DIR/tokenizer.model"
WHEEL_DIR="$DEST_DIR/wheel"

sha256_of() {
    python3 - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
PY
}

if [[ -f "$DEST" ]] && [[ "$(sha256_of "$DEST")" == "$EXPECTED_SHA256" ]]; then
    echo "llama3 tokenizer.model already present: $ROOT/$DEST"
    exit 0
fi

mkdir -p "$WHEEL_DIR"
shopt -s nullglob
wheels=("$WHEEL_DIR"/llama_models-"$LLAMA_MODELS_VERSION"-*.whl)
if [[ ${#wheels[@]} -eq 0 ]]; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: "llama-models==$LLAMA_MODELS_VERSION" -d "$WHEEL_DIR" >&2
    wheels=("$WHEEL_DIR"/llama_models-"$LLAMA_MODELS_VERSION"-*.whl)
fi
if [[ ${#wheels[@]} -eq 0 ]]; then
    echo "error: pip did not produce a llama_models-$LLAMA_MODELS_VERSION wheel in $WHEEL_DIR" >&2
    exit 1
fi
WHEEL="${wheels[0]}"

# Extract to a temporary name, verify, then move into place atomically.
TMP="$DEST.tmp.$$"
trap 'rm -f "$TMP"' EXIT
python3 - "$WHEEL" "$MEMBER" "$TMP" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

ACTUAL_SHA256="$(sha256_of "$TMP")"
if [[ "$ACTUAL_SHA256" != "$EXPECTED_SHA256" ]]; then
    echo "error: sha256 mismatch for $MEMBER from $WHEEL" >&2
    echo "  expected: $EXPECTED_SHA256" >&2
    echo "  actual:   $ACTUAL_SHA256" >&2
    exit 1
fi
mv -f "$TMP" "$DEST"
trap - EXIT
echo "llama3 tokenizer.model fetched: $ROOT/$DEST"
