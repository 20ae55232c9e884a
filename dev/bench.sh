#!/usr/bin/env bash
# Render + tokenize throughput, herd beside the reference, in one run on the same file
# (data/samples/conversations.jsonl) and the same real Llama 3 tokenizer:
#   1. herd (criterion, datasets/benches/render.rs)
#   2. Meta's llama-models ChatFormat (tiktoken) and HF tokenizers (dev/bench_reference_render.py)
# Needs the Python reference environment (dev/requirements.txt); point HERD_REFERENCE_PYTHON at its
# python if it is not .venv-ref/bin/python.
#
# Usage: bash dev/bench.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${HERD_REFERENCE_PYTHON:-.venv-ref/bin/python}

bash dev/fetch-llama3-tokenizer.sh
echo "== $(date -u +%F) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench -p herd-datasets --bench render -- --warm-up-time 2 --measurement-time 8 2>&1 \
    | grep -E '^(render|encode)|thrpt'
"$python" dev/bench_reference_render.py --seconds 8
