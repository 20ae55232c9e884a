"""Regenerates dpo/tests/fixtures/trl-parity/: a tiny random Llama policy and TRL's DPO losses on a
handful of pairs, computed by the real `trl.DPOTrainer._compute_loss` (TRL 1.x has the loss inline).

    /work/.venv-ref/bin/python dev/dpo_fixture.py

The policy checkpoint is committed (safetensors, float32). The reference is a second random model
that is NOT committed: TRL computes its log-probs (`DPOTrainer.compute_ref_log_probs`) and the
fixture stores them, as `precompute_ref_log_probs` would. Pairs are token ids with TRL-style
completion masks (every completion token, the prompt excluded). The Rust test
(dpo/tests/parity.rs) loads the checkpoint with `model::Checkpoint`, computes the policy log-probs
and each loss, and compares with TRL's within 1e-6.
"""

import json
import re
import pathlib
import tempfile

import torch
import transformers
import trl
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "dpo" / "tests" / "fixtures" / "trl-parity"
TOKENIZER = ROOT / "datasets" / "tests" / "fixtures" / "tiny-tokenizer.json"
VOCAB = 256


def tiny_llama(seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA 2:1
        head_dim=8,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=True,  # keeps the committed file under 100 kB
        initializer_range=0.1,  # large enough that the log-probs differ visibly between rows
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):  # randomised norms so a wrong eps or layout shows
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
    model.eval()
    return model


def pairs():
    """(prompt, chosen completion, rejected completion) as token ids, lengths chosen unequal."""
    generator = torch.Generator().manual_seed(7)
    shapes = [(4, 3, 5), (3, 6, 2), (5, 2, 4), (2, 5, 5)]
    result = []
    for prompt, chosen, rejected in shapes:
        ids = lambda n: torch.randint(1, VOCAB, (n,), generator=generator).tolist()
        result.append((ids(prompt), ids(chosen), ids(rejected)))
    return result


def batch(examples):
    """TRL's layout: chosen rows then rejected rows, right-padded (pad id 0, attention 0)."""
    rows = [(p + c, [0] * len(p) + [1] * len(c)) for p, c, _ in examples]
    rows += [(p + r, [0] * len(p) + [1] * len(r)) for p, _, r in examples]
    width = max(len(ids) for ids, _ in rows)
    input_ids, attention, completion = [], [], []
    for ids, mask in rows:
        pad = width - len(ids)
        input_ids.append(ids + [0] * pad)
        attention.append([1] * len(ids) + [0] * pad)
        completion.append(mask + [0] * pad)
    return (
        {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(attention),
            "completion_mask": torch.tensor(completion),
        },
        rows,
    )


def main():
    policy = tiny_llama(0)
    reference = tiny_llama(1)
    OUT.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(OUT, safe_serialization=True)
    for extra in ("generation_config.json",):
        (OUT / extra).unlink(missing_ok=True)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER), eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>"
    )
    dummy = Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})
    examples = pairs()
    inputs, rows = batch(examples)

    cases = {
        "sigmoid": dict(loss_type=["sigmoid"], loss_weights=[1.0], beta=0.1),
        # β = 0.5: at TRL's β = 0.1 the IPO loss is ≈ 24, where one f32 ulp is 1.9e-6, above the
        # 1e-6 the parity test asks for; at 0.5 it is ≈ 1.
        "ipo": dict(loss_type=["ipo"], loss_weights=[1.0], beta=0.5),
        "hinge": dict(loss_type=["hinge"], loss_weights=[1.0], beta=0.1),
        "sigmoid_sft": dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.2], beta=0.1),
    }
    expected = {}
    reference_logps = None
    with tempfile.TemporaryDirectory() as output_dir:
        for name, settings in cases.items():
            args = trl.DPOConfig(
                output_dir=output_dir,
                report_to="none",
                use_cpu=True,
                bf16=False,
                per_device_train_batch_size=len(examples),
                **settings,
            )
            trainer = trl.DPOTrainer(
                model=policy,
                ref_model=reference,
                args=args,
                train_dataset=dummy,
                processing_class=tokenizer,
            )
            trainer.model.train()
            with torch.no_grad():
                loss = trainer._compute_loss(trainer.model, dict(inputs), False)
                chosen_ref, rejected_ref = trainer.compute_ref_log_probs(trainer.ref_model, dict(inputs))
            if reference_logps is None:
                reference_logps = list(zip(chosen_ref.tolist(), rejected_ref.tolist()))
            metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
            expected[name] = {
                "loss_type": settings["loss_type"],
                "loss_weights": settings["loss_weights"],
                "beta": settings["beta"],
                "loss": loss.item(),
                "metrics": {
                    key: metrics[key]
                    for key in (
                        "rewards/chosen",
                        "rewards/rejected",
                        "rewards/accuracies",
                        "rewards/margins",
                        "logps/chosen",
                        "logps/rejected",
                    )
                },
            }
            # TRL patches forward in place; unpatch nothing — each trainer re-wraps the same model.

    # Plain torch per-row log-probs of the policy, for a finer check than TRL's batch means.
    with torch.no_grad():
        logits = policy(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token = logp.gather(-1, inputs["input_ids"][:, 1:, None]).squeeze(-1)
        row_logps = (token * inputs["completion_mask"][:, 1:]).sum(-1).tolist()

    fixture = {
        "generated_by": "dev/dpo_fixture.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "rows": [{"ids": ids, "completion_mask": mask} for ids, mask in rows],
        "pairs": len(examples),
        "reference_logps": reference_logps,
        "policy_row_logps": row_logps,
        "cases": expected,
    }
    text = json.dumps(fixture, indent=1)
    # Lists of numbers on one line each, so the file stays readable.
    text = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    (OUT / "expected.json").write_text(text + "\n")
    for path in sorted(OUT.iterdir()):
        print(path.name, path.stat().st_size)
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
