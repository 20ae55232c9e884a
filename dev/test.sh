#!/usr/bin/env bash
# The whole test suite on a fresh machine (2 cores, Rust 1.95, python3 + pip): fetches Meta's real
# Llama 3 tokenizer.model from the llama-models wheel on PyPI into .cache/ (git-ignored; the parity
# tests need it and never skip), then checks formatting, lints and runs every test.
#
# Usage: bash dev/test.sh          (.ci/run calls exactly this)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash dev/fetch-llama3-tokenizer.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# cargo's last summary is the (empty) doc-test run; close with the totals over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
