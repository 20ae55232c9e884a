#!/usr/bin/env bash
# CPU benchmarks, herd beside PyTorch on the same shapes and thread count, in interleaved rounds
# (herd, torch, herd, torch, …) so that drift in the machine's load hits both sides alike:
#   (a) training step, vocabulary 768, sequence 512, batch 4
#       pretrain/benches/train_step.rs        vs dev/bench_train_cpu_torch.py
#   (b) training step, vocabulary 128,256 (Llama 3's), sequence 2,048, batch $BIG_VOCAB_BATCH
#   (c) batched greedy generation of a SmolLM2-135M-shaped model, f32 and bf16
#       model/benches/generation.rs           vs dev/bench_generate_cpu_torch.py
# Prints every run's JSON line and, per benchmark, the median over rounds and herd / torch.
# Needs the Python reference environment (dev/requirements.txt); point HERD_REFERENCE_PYTHON at its
# python if it is not .venv-ref/bin/python. Run it on a quiet machine: nothing else compiling.
#
# Usage: bash dev/bench-cpu.sh [ROUNDS] [THREADS]      (defaults 3 and 2; or ROUNDS=… THREADS=…)
#   STEPS=8 WARMUP=2     steps per training run of (a) (median over the measured steps)
#   BIG_STEPS=4 BIG_WARMUP=1   the same for (b), whose steps are ~23× the work of (a)'s
#   BIG_VOCAB_BATCH=4    (b)'s batch (memory: see below)
#   GEN_RUNS=1           generation runs per invocation (after one warm-up)
#   GEN_NEW=128          new tokens per row (a smaller value only to smoke-test the script)
#   ONLY="a b c"         the benchmarks to run
#   HERD_TRAIN_FLAGS=…   more flags for herd's training bench, e.g. "--kernels reference" or
#                        "--loss logits" (full logits, as PyTorch; with BIG_VOCAB_BATCH=1, below)
#   OUT=DIR              where the JSON lines go (default .cache/bench-cpu/<date>)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${HERD_REFERENCE_PYTHON:-.venv-ref/bin/python}
rounds=${1:-${ROUNDS:-3}}
threads=${2:-${THREADS:-2}}
steps=${STEPS:-8}
warmup=${WARMUP:-2}
big_steps=${BIG_STEPS:-4}
big_warmup=${BIG_WARMUP:-1}
gen_runs=${GEN_RUNS:-1}
gen_new=${GEN_NEW:-128}
only=${ONLY:-a b c}
herd_train_flags=${HERD_TRAIN_FLAGS:-}
# (b)'s memory, peak RSS measured 2026-12-03 (vocabulary 128,256, sequence 2,048, one step):
#   PyTorch eager (full f32 logits, 1.05 GB per row, and tensors of that size in the loss and its
#   backward): 4.4 GiB at batch 1, 7.8 GiB at batch 2, so ~14.5 GiB at batch 4 (linear), which fits
#   24 GiB when nothing else big runs.
#   herd with the loop's chunked loss: 1.7 GiB at batch 1 and 2. With `--loss logits` herd needs
#   10.6 GiB at batch 1, ~40 GiB at batch 4: BIG_VOCAB_BATCH=1 to compare that form.
big_batch=${BIG_VOCAB_BATCH:-4}
out=${OUT:-.cache/bench-cpu/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

echo "== building the benches (release)" >&2
bench_binary() { # package bench → the path of the built bench binary
    cargo bench --no-run -p "$1" --bench "$2" --message-format=json \
        | grep -o '"executable":"[^"]*/'"$2"'-[0-9a-f]*"' | tail -1 | cut -d'"' -f4
}
train_bin=$(bench_binary herd-pretrain train_step)
generate_bin=$(bench_binary herd-model generation)
if [[ ! -x $train_bin || ! -x $generate_bin ]]; then
    echo "build failed; run: cargo bench --no-run -p herd-pretrain --bench train_step -p herd-model --bench generation" >&2
    exit 1
fi
"$python" -c 'import torch, transformers' || { echo "no torch/transformers in $python" >&2; exit 1; }

echo "== $(date -u '+%F %T') UTC on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== $(free -g | awk '/^Mem:/ {print $2 " GiB memory"}'), load average $(cut -d' ' -f1-3 /proc/loadavg), $rounds rounds, $threads threads"
echo "== herd $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)'), $("$python" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"
# PyTorch's intra-op pool is set by --threads (torch.set_num_threads); these keep OpenMP/MKL from
# starting more. herd's --threads sets RAYON_NUM_THREADS in the bench process.
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

# run CASE herd|torch COMMAND…: appends the command's JSON line to $out/CASE.jsonl and prints it.
run() {
    local case=$1 side=$2
    shift 2
    local line
    if ! line=$("$@" 2>> "$out/$case.$side.stderr" | tail -1); then
        echo "$case $side failed:" >&2
        tail -20 "$out/$case.$side.stderr" >&2
        exit 1
    fi
    echo "$line" | tee -a "$out/$case.jsonl"
}

# interleave CASE "HERD COMMAND" "TORCH COMMAND": $rounds rounds of herd then torch.
interleave() {
    local case=$1 herd=$2 torch=$3 round
    echo "== $case"
    for round in $(seq 1 "$rounds"); do
        # shellcheck disable=SC2086 # the commands are word lists
        run "$case" herd $herd
        # shellcheck disable=SC2086
        run "$case" torch $torch
    done
}

for bench in $only; do
    case $bench in
    a)
        flags="--vocab 768 --seq 512 --batch 4 --steps $steps --warmup $warmup --threads $threads"
        interleave train-vocab768-seq512-batch4 "$train_bin $flags $herd_train_flags" "$python dev/bench_train_cpu_torch.py $flags"
        ;;
    b)
        flags="--vocab 128256 --seq 2048 --batch $big_batch --steps $big_steps --warmup $big_warmup --threads $threads"
        interleave "train-vocab128256-seq2048-batch$big_batch" "$train_bin $flags $herd_train_flags" "$python dev/bench_train_cpu_torch.py $flags"
        ;;
    c)
        for dtype in f32 bf16; do
            flags="--dtype $dtype --new $gen_new --runs $gen_runs --warmup 1 --threads $threads"
            interleave "generate-$dtype" "$generate_bin $flags" "$python dev/bench_generate_cpu_torch.py $flags"
        done
        ;;
    *) echo "unknown benchmark $bench (a, b or c)" >&2; exit 1 ;;
    esac
done

echo "== summary: median over $rounds rounds (herd / torch > 1: herd faster)"
"$python" - "$out" <<'PY'
import json, pathlib, statistics, sys

for path in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    key = "tokens_per_s" if lines[0]["bench"] == "train_step" else "decode_tokens_per_s"
    medians = {}
    for side in ("herd", "torch"):
        runs = [line for line in lines if line["impl"] == side]
        if not runs:
            continue
        medians[side] = {
            field: statistics.median(run[field] for run in runs)
            for field in (key, "peak_rss_mib", "ms_per_step", "gflops_per_s", "prefill_s", "load_s")
            if field in runs[0]
        }
    row = " | ".join(
        f"{side}: " + ", ".join(f"{field} {value:,.1f}" for field, value in fields.items())
        for side, fields in medians.items()
    )
    ratio = ""
    if len(medians) == 2:
        ratio = f" | herd/torch {key} {medians['herd'][key] / medians['torch'][key]:.3f}"
    print(f"{path.stem}: {row}{ratio}")
PY
echo "== JSON lines in $out"
