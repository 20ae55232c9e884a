#!/usr/bin/env bash
# herd's main job: `herd demo`, the whole Llama 3 chat recipe from nothing on this machine's CPU,
# with no network — generate a task with checkable answers (multi-digit addition in chat form),
# train a tokenizer, pretrain a tiny Llama, SFT it, collect preferences (a verifier stands in for
# annotators), then one round: reward model, rejection sampling with the RM and the verifier, SFT,
# DPO (two seeds), averaging, export — and print held-out accuracy after every stage.
#
# Usage: bash dev/demo.sh [--short]     (everything lands in runs/demo/; about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked --quiet
herd="${CARGO_TARGET_DIR:-target}/release/herd"
exec "$herd" demo --out runs/demo "$@"
