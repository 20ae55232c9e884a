"""The PyTorch side of pretrain/benches/train_step.rs: one CPU training step of the same Llama.

transformers' LlamaForCausalLM (SDPA attention) with hidden 384, intermediate 1024, 6 layers,
6 heads over 2 key/value heads (head_dim 64), rms_norm_eps 1e-5, rope_theta 500000, untied head,
f32, eager. Per step: forward on random ids with `labels=input_ids` (mean next-token cross entropy
over the batch · (seq − 1) shifted positions, what herd's loss divides by too), backward,
clip_grad_norm_(…, 1.0), AdamW (lr 3e-4, betas 0.9 / 0.95, weight decay 0.1), zero_grad.

AdamW gets the same two groups as herd's loop (`training::llama_weight_decay(false)`): norms,
biases and the token embedding without decay, every other weight with 0.1 — the same arithmetic
on both sides (a group at weight decay 0 skips torch's decay multiply, as herd skips it).

Prints one JSON line with the keys herd's bench prints: tokens/s (median over the measured steps,
min, max), ms per step, model FLOPs per token and GFLOP/s, peak RSS.

    .venv-ref/bin/python dev/bench_train_cpu_torch.py [--vocab 768] [--seq 512] [--batch 4]
        [--steps 8] [--warmup 2] [--threads 2]
"""

import argparse
import json
import resource
import statistics
import time

import torch
import transformers

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 384, 1024, 6, 6, 2, 64


def no_decay(name: str) -> bool:
    """herd's llama_weight_decay(false): norms, biases and embeddings are not decayed."""
    return name.endswith("norm.weight") or name.endswith(".bias") or "embed_tokens" in name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=768)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.steps < 1 or args.seq < 2:
        parser.error("need --steps >= 1 and --seq >= 2")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=args.seq,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="sdpa",
    )
    model = transformers.LlamaForCausalLM(config).to(torch.float32).train()
    named = list(model.named_parameters())
    parameters = sum(p.numel() for _, p in named)
    embedding = model.model.embed_tokens.weight.numel()
    non_embedding = parameters - embedding
    # The formula of herd's bench: 6 · N_non_embedding (the untied LM head counts, the embedding
    # gather does not) + 12 · layers · seq · (heads · head_dim) / 2 for causal attention.
    flops_per_token = 6 * non_embedding + 12 * LAYERS * args.seq * HEADS * HEAD_DIM / 2
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.1},
            {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
        ],
        lr=3e-4,
        betas=(0.9, 0.95),
        weight_decay=0.1,
    )
    trainable = [p for _, p in named]

    step_seconds, losses = [], []
    for step in range(args.warmup + args.steps):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq))
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds = time.perf_counter() - started
        if step >= args.warmup:
            step_seconds.append(seconds)

    tokens_per_step = args.batch * args.seq
    rates = sorted(tokens_per_step / s for s in step_seconds)
    tokens_per_s = statistics.median(rates)
    print(json.dumps({
        "bench": "train_step",
        "impl": "torch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kernels": f"eager, {model.config._attn_implementation}",
        "loss": "logits",  # labels=: full logits, then cross_entropy
        "threads": torch.get_num_threads(),
        "vocab": args.vocab,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "params": parameters,
        "params_non_embedding": non_embedding,
        "flops_per_token": flops_per_token,
        "tokens_per_s": round(tokens_per_s, 1),
        "tokens_per_s_min": round(rates[0], 1),
        "tokens_per_s_max": round(rates[-1], 1),
        "ms_per_step": round(1000 * statistics.median(step_seconds), 1),
        "gflops_per_s": round(flops_per_token * tokens_per_s / 1e9, 2),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }))


if __name__ == "__main__":
    main()
