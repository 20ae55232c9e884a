"""PyTorch reference for herd's GPU training throughput (configs/pretrain-gpu-bench.toml).

Same shapes as the herd config: vocab 768, hidden 1024, intermediate 2816, 8 layers, 16 heads,
4 key/value heads, sequences of 1024 tokens, batch 8; f32 master weights with bf16 autocast,
AdamW (weight decay 0.1), global-norm clipping at 1.0. Uses transformers' LlamaForCausalLM when
transformers is installed, else a compact Llama in plain PyTorch with the same parameter count
(SDPA attention). Prints one JSON line: tokens/s over the steps after warm-up, and MFU.

    python3 dev/bench_pretrain_torch.py --steps 30
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, SEQ, BATCH = 768, 1024, 2816, 8, 16, 4, 1024, 8
HEAD_DIM = HIDDEN // HEADS


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_norm = nn.RMSNorm(HIDDEN, eps=1e-5)
        self.post_norm = nn.RMSNorm(HIDDEN, eps=1e-5)
        self.q = nn.Linear(HIDDEN, HEADS * HEAD_DIM, bias=False)
        self.k = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=False)
        self.v = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=False)
        self.o = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)
        self.gate = nn.Linear(HIDDEN, INTERMEDIATE, bias=False)
        self.up = nn.Linear(HIDDEN, INTERMEDIATE, bias=False)
        self.down = nn.Linear(INTERMEDIATE, HIDDEN, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.input_norm(x)
        q = self.q(h).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k(h).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v(h).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attention.transpose(1, 2).reshape(b, t, HIDDEN))
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Llama(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.RMSNorm(HIDDEN, eps=1e-5)
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)
        inverse = 1.0 / (500000.0 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
        angles = torch.outer(torch.arange(SEQ).float(), inverse)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        return self.head(self.norm(x))


def build():
    try:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
            max_position_embeddings=SEQ, rope_theta=500000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False, attn_implementation="sdpa",
        )
        model = LlamaForCausalLM(config)
        return model, "transformers LlamaForCausalLM (sdpa)", lambda ids: model(input_ids=ids).logits
    except ImportError:
        model = Llama()
        return model, "plain PyTorch Llama (sdpa)", model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, name, forward = build()
    model = model.cuda()
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ + 1), device="cuda")
    inputs, targets = ids[:, :-1], ids[:, 1:]
    timings = []
    for step in range(args.steps):
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(inputs)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    measured = timings[args.warmup:]
    tokens_per_s = BATCH * SEQ * len(measured) / sum(measured)
    peak = 989e12  # H100 SXM bf16 dense, spec
    print(json.dumps({
        "impl": name, "torch": torch.__version__, "parameters": parameters,
        "tokens_per_s": round(tokens_per_s), "step_ms": round(1000 * sum(measured) / len(measured), 1),
        "mfu_vs_989_tflops": round(6 * parameters * tokens_per_s / peak, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))


if __name__ == "__main__":
    main()
