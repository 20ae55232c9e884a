"""Generate sft/tests/fixtures/trajectory/: a small random Llama checkpoint and the trajectory of 8
full-batch SFT steps that transformers + torch.optim.AdamW take on it, so sft/tests/trajectory.rs
can check that herd (hidden states -> chunked LM-head log-probs -> masked loss -> backward ->
global-norm clipping -> AdamW) follows the same path.

What it writes
--------------
* `config.json`, `model.safetensors`: the initial checkpoint, written by `save_pretrained`
  (f32; vocab 96, hidden 64, intermediate 160, 2 layers, 4 query heads over 2 key/value heads,
  head_dim 16, rms eps 1e-5, rope_theta 10000, untied lm_head). Weights are drawn wider than
  transformers' init (normal std 0.1, norm weights uniform in [0.5, 1.5]) so that a wrong op moves
  the trajectory far above the test tolerance.
* `trajectory.json`:
  - `input_ids` (3, 24): right-padded rows of 24, 17 and 11 real tokens (padding id 0),
  - `attention_mask` (3, 24): 1 on real tokens, then 0,
  - `loss_mask` (3, 24): 1 on "answer" tokens, 0 on "prompt" tokens and padding. Token t counts
    when loss_mask[t] = 1 and is predicted by position t - 1 (mask[0] is always 0). Row 0 has two
    answer spans (a two-turn dialogue),
  - the optimizer: AdamW lr 1e-3 (constant), betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on
    every parameter except names ending in "norm.weight" and the embeddings (herd's
    `llama_weight_decay(false)`), `foreach=False`; `clip_grad_norm_(max_norm=1.0)` before each
    step,
  - `steps`: per step the loss (sum of masked token NLL / number of masked tokens, f32, at the
    parameters before the step) and the global gradient norm before clipping,
  - `final_loss`: the loss at the parameters after the last step,
  - `final_parameters`: per parameter `sum`, `sum_squares` of the final values and `update_sum`,
    `update_sum_squares`, `update_abs_sum` of (final - initial), all accumulated in float64.

How to run (from the repository root)
-------------------------------------
    .venv-ref/bin/python dev/trajectory_fixture.py      # torch 2.15, transformers 5.23, CPU only
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

DIRECTORY = Path(__file__).resolve().parent.parent / "sft" / "tests" / "fixtures" / "trajectory"
SEED = 20
STEPS = 8
LEARNING_RATE = 1e-3
BETAS = (0.9, 0.95)
EPSILON = 1e-8
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0
BATCH, SEQ = 3, 24
PAD_ID = 0
# Per row: the real length and the [start, end) spans of answer tokens.
ROWS = [
    (24, [(6, 12), (16, 24)]),
    (17, [(5, 17)]),
    (11, [(4, 11)]),
]


def decays(name: str) -> bool:
    """herd's `llama_weight_decay(false)`."""
    is_norm = name.endswith("norm.weight")
    is_bias = name.rsplit(".", 1)[-1] == "bias"
    is_embedding = "embed_tokens" in name
    return not (is_norm or is_bias or is_embedding)


def randomize(model: LlamaForCausalLM, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED + 1)
    input_ids = torch.full((BATCH, SEQ), PAD_ID, dtype=torch.int64)
    attention_mask = torch.zeros((BATCH, SEQ), dtype=torch.int64)
    loss_mask = torch.zeros((BATCH, SEQ), dtype=torch.int64)
    for row, (length, spans) in enumerate(ROWS):
        # Real tokens avoid the padding id, so a mix-up of padding and text shows.
        input_ids[row, :length] = torch.randint(1, 96, (length,), generator=generator)
        attention_mask[row, :length] = 1
        for start, end in spans:
            loss_mask[row, start:end] = 1
    return input_ids, attention_mask, loss_mask


def masked_loss(
    model: LlamaForCausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
) -> torch.Tensor:
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.to(torch.float32)
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    token_log_probs = log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    weights = loss_mask[:, 1:].to(torch.float32)
    return -(token_log_probs * weights).sum() / weights.sum()


def summary(final: torch.Tensor, initial: torch.Tensor) -> dict[str, float]:
    final = final.detach().to(torch.float64)
    update = final - initial.to(torch.float64)
    return {
        "sum": final.sum().item(),
        "sum_squares": final.square().sum().item(),
        "update_sum": update.sum().item(),
        "update_sum_squares": update.square().sum().item(),
        "update_abs_sum": update.abs().sum().item(),
    }


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).to(torch.float32)
    randomize(model, SEED)
    if DIRECTORY.exists():
        shutil.rmtree(DIRECTORY)
    DIRECTORY.mkdir(parents=True)
    model.save_pretrained(DIRECTORY, safe_serialization=True)
    (DIRECTORY / "generation_config.json").unlink(missing_ok=True)

    # Train what herd will load: the directory as written.
    model = LlamaForCausalLM.from_pretrained(
        DIRECTORY, dtype=torch.float32, attn_implementation="eager"
    ).train()
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    named = sorted(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=LEARNING_RATE, betas=BETAS, eps=EPSILON, foreach=False
    )
    input_ids, attention_mask, loss_mask = batch()

    steps = []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = masked_loss(model, input_ids, attention_mask, loss_mask)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        steps.append({"loss": loss.item(), "grad_norm": norm.item()})
        print(f"step {step}: loss {loss.item():.6f}, grad norm {norm.item():.6f}")
    with torch.no_grad():
        final_loss = masked_loss(model, input_ids, attention_mask, loss_mask).item()
    print(f"final loss {final_loss:.6f}")

    fixture = {
        "generator": "dev/trajectory_fixture.py",
        "torch_version": torch.__version__,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "loss_mask": loss_mask.tolist(),
        "learning_rate": LEARNING_RATE,
        "beta1": BETAS[0],
        "beta2": BETAS[1],
        "epsilon": EPSILON,
        "weight_decay": WEIGHT_DECAY,
        "max_grad_norm": MAX_GRAD_NORM,
        "decaying": sorted(n for n, _ in named if decays(n)),
        "steps": steps,
        "final_loss": final_loss,
        "final_parameters": {n: summary(p, initial[n]) for n, p in named},
    }
    (DIRECTORY / "trajectory.json").write_text(json.dumps(fixture, indent=1) + "\n")
    size = sum(f.stat().st_size for f in DIRECTORY.iterdir())
    print(f"wrote {DIRECTORY}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
