#!/usr/bin/env bash
# herd's main job until the training pipeline exists: with Meta's real Llama 3 tokenizer, import it
# into a tokenizer.json, validate the shipped sample data, measure it, render it to token ids and
# loss masks, and train a small BPE tokenizer of our own on the samples.
#
# Usage: bash dev/demo.sh     (everything lands in .cache/demo/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash dev/fetch-llama3-tokenizer.sh
cargo build --release --locked --quiet
herd="${CARGO_TARGET_DIR:-target}/release/herd"
out=.cache/demo
mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }

step "Import Meta's tokenizer.model (tiktoken) into an HF tokenizer.json"
$herd tokenizer import .cache/llama3/tokenizer.model --out "$out/llama3-tokenizer.json"

step "Validate the sample conversations and preferences (every problem, file:line: field)"
$herd data validate data/samples/conversations.jsonl data/samples/preferences.jsonl \
    --tokenizer "$out/llama3-tokenizer.json" --max-length 4096

step "Statistics of the sample conversations"
$herd data stats data/samples/conversations.jsonl --tokenizer "$out/llama3-tokenizer.json" \
    --max-length 512 --max-length 1024

step "Statistics of the sample preferences"
$herd data stats data/samples/preferences.jsonl --tokenizer "$out/llama3-tokenizer.json" --max-length 512

step "Render the first conversation as Llama 3.1 text"
head -n 1 data/samples/conversations.jsonl | $herd data render -

step "Render everything to token ids + SFT and DPO masks ($out/*.ids.jsonl)"
$herd data render --ids --tokenizer "$out/llama3-tokenizer.json" data/samples/conversations.jsonl \
    > "$out/conversations.ids.jsonl"
$herd data render --ids --tokenizer "$out/llama3-tokenizer.json" data/samples/preferences.jsonl \
    > "$out/preferences.ids.jsonl"
wc -l "$out"/*.ids.jsonl

step "Train a 2,048-token byte-level BPE with the Llama 3 pre-tokenizer on the samples"
$herd tokenizer train --corpus data/samples/conversations.jsonl --vocab-size 2048 \
    --out "$out/tiny-tokenizer.json"
$herd data stats data/samples/conversations.jsonl --tokenizer "$out/tiny-tokenizer.json" --max-length 1024
