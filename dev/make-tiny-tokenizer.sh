#!/usr/bin/env bash
# Regenerate datasets/tests/fixtures/tiny-tokenizer.json: a byte-level BPE tokenizer with the
# Llama 3 layout (512 base tokens, then Meta's 256 special tokens) trained by herd's own
# `train_bpe` on the committed corpus datasets/tests/fixtures/tiny-tokenizer-corpus.txt.
# Training is deterministic; the integration test
# `tiny_tokenizer_fixture_loads_and_is_what_the_script_trains` fails when the file is stale.
#
# Usage: bash dev/make-tiny-tokenizer.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
FIXTURES=datasets/tests/fixtures
cargo run --quiet -p herd-datasets --example train_tiny_tokenizer -- \
    "$FIXTURES/tiny-tokenizer-corpus.txt" "$FIXTURES/tiny-tokenizer.json"
