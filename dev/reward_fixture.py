"""Regenerates reward/tests/fixtures/tiny-rm/: a tiny random LlamaForSequenceClassification and the
rewards and losses TRL's RewardTrainer computes on a few right-padded preference pairs.

    /work/.venv-ref/bin/python dev/reward_fixture.py

The loss comes from the real `trl.RewardTrainer.compute_loss`, called unbound on a stand-in `self`
that holds only what the method reads (`model`, `args.center_rewards_coefficient`, `accelerator`,
`_metrics`): building a whole trainer needs a dataset pipeline that adds nothing to the loss. The
model is in eval mode, so compute_loss takes its "eval" branch (no token counting). Init std 0.1
(instead of 0.02) makes the rewards large enough for a wrong read-out token to show.
"""

import json
import pathlib
import types
from collections import defaultdict

import torch
import transformers
import trl
from trl import RewardTrainer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "reward/tests/fixtures/tiny-rm"
VOCAB = 256
PAD = 255  # in range of the tiny vocabulary, never used as content


def main():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        initializer_range=0.1,
        tie_word_embeddings=False,
        num_labels=1,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForSequenceClassification(config).float().eval()
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)

    generator = torch.Generator().manual_seed(1)

    def sequence(length):
        return torch.randint(3, PAD, (length,), generator=generator).tolist()

    # (chosen length, rejected length): rows of different lengths, so padding and the read-out
    # index matter.
    lengths = [(7, 5), (12, 12), (3, 9), (10, 4)]
    chosen = [sequence(c) for c, _ in lengths]
    rejected = [sequence(r) for _, r in lengths]
    margins = [1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0]

    rows = chosen + rejected
    longest = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [PAD] * (longest - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows])

    def trainer(center):
        accelerator = types.SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x)
        return types.SimpleNamespace(
            model=model,
            args=types.SimpleNamespace(center_rewards_coefficient=center),
            accelerator=accelerator,
            _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
            _total_train_tokens=0,
            _tp_size=1,
        )

    def loss(center=None, margin=None):
        inputs = {"input_ids": input_ids.clone(), "attention_mask": attention_mask.clone()}
        if margin is not None:
            inputs["margin"] = torch.tensor(margin)
        with torch.no_grad():
            value, outputs = RewardTrainer.compute_loss(
                trainer(center), model, inputs, return_outputs=True
            )
        return value.item(), outputs.logits.squeeze(-1).tolist()

    plain, rewards = loss()
    with_margin, _ = loss(margin=margins)
    centred, _ = loss(center=0.01)
    both, _ = loss(center=0.25, margin=margins)
    fixture = {
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "pad_token_id": PAD,
        "chosen": chosen,
        "rejected": rejected,
        "margins": margins,
        "rewards_chosen": rewards[: len(chosen)],
        "rewards_rejected": rewards[len(chosen) :],
        "losses": [
            {"margin": False, "center_rewards_coefficient": 0.0, "loss": plain},
            {"margin": True, "center_rewards_coefficient": 0.0, "loss": with_margin},
            {"margin": False, "center_rewards_coefficient": 0.01, "loss": centred},
            {"margin": True, "center_rewards_coefficient": 0.25, "loss": both},
        ],
    }
    (OUT / "expected.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(json.dumps(fixture["losses"]), rewards)


if __name__ == "__main__":
    main()
