"""Generate model/tests/fixtures/<name>/: tiny random Llama checkpoints and the logits that
Hugging Face transformers computes for them, so model/tests/parity.rs can check herd's forward.

What it writes
--------------
For every case below, a Hugging Face checkpoint directory written by `save_pretrained`
(config.json, safetensors weights, generation_config.json) plus `expected.safetensors` holding
* `input_ids`  (batch, seq) int64: random ids,
* `positions`  (n,) int64: the sequence positions whose logits are stored (all of them for short
  inputs; for the 2048-token case the first few, some around the RoPE wavelengths and the last 16,
  so the committed files stay small),
* `logits`     (batch, n, vocab) float32: `.logits[:, positions]` of the directory reloaded with
  `LlamaForCausalLM.from_pretrained(dir, dtype=float32, attn_implementation="eager")` on CPU.

Weights are drawn with a larger spread than transformers' default init (normal std 0.1 instead of
0.02, norm weights uniform in [0.5, 1.5] instead of ones) so that a wrong rotation, mask or norm
moves the logits far above the test tolerance.

Cases
-----
* gqa4_untied   8 query heads over 2 key/value heads, untied lm_head, transformers-5 config layout
* gqa2_tied     4 query heads over 2 key/value heads, head_dim 32 != hidden/heads, tied embeddings
* mha_classic   4:4 heads, classic `rope_theta` config layout (as released Llama 3.x checkpoints)
* llama3_long   llama3 rope scaling (factor 8, low 1, high 4, original_max_position_embeddings 64)
                on a 2048-token input; classic `rope_scaling` layout
* bf16          weights stored in bfloat16; expected logits from those weights upcast to float32
* sharded       weights split over several safetensors files with model.safetensors.index.json

How to run (from the repository root)
-------------------------------------
    .venv-ref/bin/python dev/model_fixtures.py      # torch 2.15, transformers 5.23, CPU only
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent / "model" / "tests" / "fixtures"


def randomize(model: LlamaForCausalLM, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def to_classic_layout(directory: Path) -> None:
    """Rewrite config.json the way released Llama 3.x checkpoints spell it (rope_theta at the top
    level, rope_scaling for llama3, torch_dtype)."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    else:
        config["rope_scaling"] = None
    config["torch_dtype"] = config.pop("dtype")
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def make(
    name: str,
    *,
    seed: int,
    batch: int,
    seq: int,
    positions: list[int] | None = None,
    classic: bool = False,
    save_dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    **config_fields,
) -> None:
    fields = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    fields.update(config_fields)
    config = LlamaConfig(**fields)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    randomize(model, seed)
    directory = ROOT / name
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(save_dtype).save_pretrained(directory, safe_serialization=True, **kwargs)
    if classic:
        to_classic_layout(directory)
    # The reference is what transformers computes after loading the directory as written, in
    # float32: this also checks that the classic-layout rewrite loads, and keeps the RoPE buffers
    # out of the stored dtype (`Module.to(bfloat16)` would round `inv_freq` too).
    model = LlamaForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    generator = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.to(torch.float32)
    if positions is None:
        positions = list(range(seq))
    index = torch.tensor(positions, dtype=torch.int64)
    save_file(
        {
            "input_ids": input_ids.to(torch.int64).contiguous(),
            "positions": index,
            "logits": logits[:, index].contiguous(),
        },
        directory / "expected.safetensors",
    )
    size = sum(f.stat().st_size for f in directory.iterdir())
    print(f"{name}: {size / 1024:.0f} KiB, logits std {logits.std():.3f}")


def main() -> None:
    torch.set_num_threads(2)
    make("gqa4_untied", seed=1, batch=2, seq=24)
    make(
        "gqa2_tied",
        seed=2,
        batch=2,
        seq=20,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
        eos_token_id=[2, 3],
    )
    make(
        "mha_classic",
        seed=3,
        batch=1,
        seq=32,
        classic=True,
        num_attention_heads=4,
        num_key_value_heads=4,
        rope_theta=500000.0,
    )
    long_positions = [0, 1, 2, 15, 16, 17, 63, 64, 65, 100, 500, 1000, 1500, 2000]
    long_positions += list(range(2048 - 16, 2048))
    make(
        "llama3_long",
        seed=4,
        batch=1,
        seq=2048,
        positions=long_positions,
        classic=True,
        num_attention_heads=4,
        num_key_value_heads=1,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )
    make("bf16", seed=5, batch=2, seq=16, save_dtype=torch.bfloat16)
    make("sharded", seed=6, batch=1, seq=16, max_shard_size="150KB")


if __name__ == "__main__":
    main()
