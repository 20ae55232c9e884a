#!/usr/bin/env bash
# GPU training throughput, herd beside PyTorch on the same shapes, in one run on the GPU machine
# (the device tool). herd must be built here with `--features cuda` and its binary carried as
# .cache/gpu/herd (../shared/cuda/README.md). Results land in $OUT (or .cache/gpu/out).
#
# Usage (on the GPU machine, from the repository root): bash dev/bench-gpu.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-.cache/gpu/out}
mkdir -p "$out"
# The CUDA 13 libraries come with PyTorch's wheels there.
nvidia_dir=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))')/nvidia
LD_LIBRARY_PATH=$(ls -d "$nvidia_dir"/*/lib | tr '\n' ':')${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if ldd .cache/gpu/herd | grep 'not found'; then exit 1; fi

echo "== herd (candle, bf16 over f32 master weights)"
start=$(date +%s)
.cache/gpu/herd pretrain --config configs/pretrain-gpu-bench.toml --set "output_dir=\"$out/herd-run\"" \
    > "$out/herd-summary.json" 2> "$out/herd-stderr.txt" || { tail -20 "$out/herd-stderr.txt"; exit 1; }
echo "wall $(( $(date +%s) - start )) s"
python3 - "$out/herd-run/metrics.jsonl" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
measured = lines[5:]  # after warm-up, as the PyTorch script
tokens = sum(line["tokens"] for line in measured)
seconds = sum(line["tokens"] / line["tokens_per_s"] for line in measured)
parameters = 91_767_808
tokens_per_s = tokens / seconds
print(json.dumps({"impl": "herd (candle 0.11.1)", "parameters": parameters, "tokens_per_s": round(tokens_per_s),
                  "step_ms": round(1000 * seconds / len(measured), 1),
                  "mfu_vs_989_tflops": round(6 * parameters * tokens_per_s / 989e12, 4),
                  "loss_first_last": [round(lines[0]["loss"], 3), round(lines[-1]["loss"], 3)]}))
PY
echo "== PyTorch"
python3 dev/bench_pretrain_torch.py --steps 30
