#!/usr/bin/env bash
# The whole test suite on a fresh machine (2 cores, Rust 1.95, python3 + pip): fetches Meta's real
# Llama 3 tokenizer.model from the llama-models wheel on PyPI into .cache/ (git-ignored; the parity
# tests need it and never skip), installs Debian's chromium + chromium-driver for the labeling app's
# browser tests (they never skip either), then checks formatting, lints and runs every test. The
# labeling app's tests use the PostgreSQL server at 127.0.0.1:5432 (HERD_TEST_POSTGRES_URL to change).
#
# Usage: bash dev/test.sh          (.ci/run calls exactly this)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash dev/fetch-llama3-tokenizer.sh
bash dev/install-chromium.sh
# The labeling app's tests need the local PostgreSQL server; start it if it is installed but stopped.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432 && [[ -d /etc/postgresql ]]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The CUDA build compiles (it cannot run without a GPU; the GPU checks are in README § GPU).
bash dev/check-cuda.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# cargo's last summary is the (empty) doc-test run; close with the totals over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
