"""The PyTorch side of synth/benches/rejection.rs: K samples of one prompt with transformers'
`generate(num_return_sequences=K)`, which expands the prompt to K rows *before* the prefill (the
prompt is recomputed per sample, herd's "batched" mode). Same model shape (hidden 256, 4 layers,
4 heads over 2 key/value heads, MLP 704, vocabulary 8,192), a 384-token prompt, exactly 32 new
tokens per sample, temperature 1, 2 CPU threads; median of 3 runs after a warm-up.

Run: /work/.venv-ref/bin/python dev/bench_rejection_torch.py
"""

import statistics
import time

import torch
import transformers

PROMPT_TOKENS = 384
NEW_TOKENS = 32


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        rope_theta=500000.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    prompt = torch.randint(0, 8192, (1, PROMPT_TOKENS))

    def run(samples: int) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                num_return_sequences=samples,
            )
        return time.perf_counter() - started

    run(2)
    print(
        f"transformers {transformers.__version__}, torch {torch.__version__}, "
        f"prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} new tokens per sample, 2 threads"
    )
    for samples in (8, 16):
        seconds = statistics.median(run(samples) for _ in range(3))
        print(f"K = {samples:>2}: generate(num_return_sequences=K) {samples / seconds:6.1f} samples/s")


if __name__ == "__main__":
    main()
