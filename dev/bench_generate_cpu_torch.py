"""The PyTorch side of model/benches/generation.rs: batched greedy generation on CPU.

transformers' LlamaForCausalLM (SDPA attention) of SmolLM2-135M's shape (30 layers, hidden 576,
intermediate 1536, 9 heads over 3 key/value heads, vocabulary 49152, tied head, rope_theta
100000, rms_norm_eps 1e-5) with random weights, saved by a child process in the measured dtype
(so this process's peak RSS is that of loading and generating only), then timed: the load
(`from_pretrained`), the prefill (one forward over the prompts with the cache, last logits only,
as generate's own prefill), and `generate(max_new_tokens=128, min_new_tokens=128,
do_sample=False)` over 8 prompts of 32 random tokens (no eos id: no row stops early). Decode
tokens/s = batch · new tokens / (generate − prefill), the load excluded. Prints one JSON line with
the keys herd's bench prints.

    .venv-ref/bin/python dev/bench_generate_cpu_torch.py [--dtype f32|bf16] [--batch 8]
        [--prompt 32] [--new 128] [--runs 1] [--warmup 1] [--threads 2]
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def smollm2_135m_shape() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
        attn_implementation="sdpa",
    )


def write_checkpoint(directory: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(smollm2_135m_shape()).to(dtype)
    model.save_pretrained(directory)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    dtype = DTYPES[args.dtype]
    if args.write_checkpoint:
        write_checkpoint(args.write_checkpoint, dtype)
        return
    if args.runs < 1 or args.new < 2:
        parser.error("need --runs >= 1 and --new >= 2")

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as directory:
        subprocess.run(
            [sys.executable, __file__, "--write-checkpoint", directory, "--dtype", args.dtype],
            check=True,
        )
        started = time.perf_counter()
        model = transformers.LlamaForCausalLM.from_pretrained(directory, dtype=dtype).eval()
        load_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())  # the tied head counted once
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def prompts() -> torch.Tensor:
        return torch.randint(0, vocab, (args.batch, args.prompt), generator=generator)

    def generate(ids: torch.Tensor, new: int) -> torch.Tensor:
        return model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )

    prefill_seconds, total_seconds = [], []
    with torch.inference_mode():
        for _ in range(args.warmup):
            generate(prompts(), 4)
        for _ in range(args.runs):
            ids = prompts()
            started = time.perf_counter()
            model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=True,
                logits_to_keep=1,
            )
            prefill_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            output = generate(ids, args.new)
            total_seconds.append(time.perf_counter() - started)
            if output.shape != (args.batch, args.prompt + args.new):
                sys.exit(f"generate returned {tuple(output.shape)}, not {(args.batch, args.prompt + args.new)}")

    new_tokens = args.batch * args.new
    decode_rates = sorted(new_tokens / (t - p) for t, p in zip(total_seconds, prefill_seconds))
    prefill = statistics.median(prefill_seconds)
    print(json.dumps({
        "bench": "generate",
        "impl": "torch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kernels": f"eager, {model.config._attn_implementation}",
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "batch": args.batch,
        "prompt_tokens": args.prompt,
        "new_tokens": args.new,
        "runs": args.runs,
        "params": parameters,
        "load_s": round(load_seconds, 3),
        "prefill_s": round(prefill, 3),
        "total_s": round(statistics.median(total_seconds), 3),
        "prefill_tokens_per_s": round(args.batch * args.prompt / prefill, 1),
        "decode_tokens_per_s": round(statistics.median(decode_rates), 2),
        "decode_tokens_per_s_min": round(decode_rates[0], 2),
        "decode_tokens_per_s_max": round(decode_rates[-1], 2),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
