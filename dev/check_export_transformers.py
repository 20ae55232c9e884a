"""Checks that a checkpoint written by `herd export` works unchanged in transformers.

1. `AutoModelForCausalLM.from_pretrained(EXPORT)` and `AutoTokenizer.from_pretrained(EXPORT)` load it
   with no missing or unexpected weights;
2. transformers' `apply_chat_template` on the sample conversations gives the ids
   `herd data render --ids` gives (for the conversations whose text tokenizes the same as herd's
   piecewise rendering; the known limits are in datasets/tests/fixtures/chat_template.json);
3. transformers' greedy `generate` from the export equals `herd generate --temperature 0`, token for
   token, on the same prompts — the logits agree wherever it matters.

    .venv-ref/bin/python dev/check_export_transformers.py EXPORT_DIR [HERD_BINARY]
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    export = Path(sys.argv[1])
    herd = sys.argv[2] if len(sys.argv) > 2 else str(REPO / "target/debug/herd")
    model, info = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32, output_loading_info=True)
    problems = {key: value for key, value in info.items() if value}
    assert not problems, f"loading problems: {problems}"
    tokenizer = AutoTokenizer.from_pretrained(export)

    conversations = [json.loads(line) for line in open(REPO / "data/samples/conversations.jsonl")]
    rendered = subprocess.run(
        [herd, "data", "render", "--ids", "--train-on", "all-turns", "--tokenizer", str(export / "tokenizer.json"),
         str(REPO / "data/samples/conversations.jsonl")],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    same = 0
    for conversation, line in zip(conversations, rendered):
        ids = tokenizer.apply_chat_template(conversation["messages"], tokenize=True, return_dict=False)
        same += ids == json.loads(line)["ids"]
    print(f"apply_chat_template ids equal to herd's: {same} of {len(conversations)} conversations")

    prompts = [{"messages": conversation["messages"][:1]} for conversation in conversations[:6]]
    with tempfile.TemporaryDirectory() as scratch:
        prompt_file, output_file = Path(scratch) / "prompts.jsonl", Path(scratch) / "out.jsonl"
        prompt_file.write_text("".join(json.dumps(prompt) + "\n" for prompt in prompts))
        subprocess.run(
            [herd, "generate", "--model", str(export), "--input", str(prompt_file), "--output", str(output_file),
             "--temperature", "0", "--max-new-tokens", "24", "--batch-size", "1"],
            check=True, capture_output=True,
        )
        herd_outputs = [json.loads(line) for line in output_file.read_text().splitlines()]
    stops = [128009, 128008, 128001] if tokenizer.vocab_size >= 128000 else [
        tokenizer.convert_tokens_to_ids(token) for token in ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"]]
    agreed = 0
    for prompt, herd_output in zip(prompts, herd_outputs):
        ids = tokenizer.apply_chat_template(prompt["messages"], add_generation_prompt=True, tokenize=True,
                                            return_dict=False, return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=stops,
                                       pad_token_id=stops[0])
        new = generated[0, ids.shape[1]:].tolist()
        if new and new[-1] in stops:
            new = new[:-1]
        agreed += new == herd_output["ids"]
        if new != herd_output["ids"]:
            print("differs:", new, herd_output["ids"])
    print(f"greedy generations equal to herd's: {agreed} of {len(prompts)}")
    assert agreed == len(prompts)


if __name__ == "__main__":
    main()
