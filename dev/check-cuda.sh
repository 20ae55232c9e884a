#!/usr/bin/env bash
# Compiles herd with the `cuda` feature, so that a CUDA build regression cannot land unnoticed on
# machines with no GPU and no system CUDA (CI's): installs the CUDA 13.0 build toolkit from PyPI
# wheels (../shared/cuda/build-toolkit.sh; ~30 s, ~1.3 GB, cached in ~/.cache/herd-cuda13), then
# `cargo check`s every crate and target with `--features cuda` (candle's CUDA kernels go through
# nvcc: ~9 minutes cold on 2 cores, in the same target directory as the CPU build). Nothing runs:
# a `cuda` binary needs libcuda at start-up, which only a GPU machine has (../shared/cuda/README.md).
#
# Usage: bash dev/check-cuda.sh          (dev/test.sh calls it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

toolkit=../shared/cuda/build-toolkit.sh
if [[ ! -f $toolkit ]]; then
    echo "check-cuda: $toolkit is missing (the shared folder must sit beside the repository)" >&2
    exit 1
fi
# cudarc's sources must be in the cargo registry for the toolkit's libcuda link stub.
cargo fetch --locked
eval "$(bash "$toolkit")"
cargo check --workspace --all-targets --locked --features cuda
echo "check-cuda: herd compiles with --features cuda"
