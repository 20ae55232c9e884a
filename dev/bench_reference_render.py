"""Python reference numbers for herd's chat-rendering throughput benchmark.

Reads data/samples/conversations.jsonl (herd's message format), converts each
conversation to Meta's RawMessage list (with dev/protocol_fixtures.py's
`herd_to_raw_messages`, the same conversion the fixtures use) and times:

1. Meta's `ChatFormat.encode_dialog_prompt(messages, ToolPromptFormat.json)`
   (llama-models 0.3.0, tiktoken underneath) over all conversations, repeated
   for about --seconds seconds;
2. Hugging Face `tokenizers` with the tokenizer that
   `transformers.convert_slow_tokenizer.TikTokenConverter` builds from the same
   tokenizer.model (`encode_special_tokens = True`), encoding the same texts
   piece by piece (role names, "\\n\\n", contents, tool-call texts) with the
   special-token ids spliced in, exactly as ChatFormat does. Its output is
   checked against Meta's ids before timing.

Each prints one JSON line:
    {"impl": "...", "conversations_per_s": ..., "tokens_per_s": ..., ...}
Tokens are those of the full rendering including the trailing generation
prompt (the assistant header), i.e. Meta's output unchanged.

Run from the repository root:
    .venv-ref/bin/python dev/bench_reference_render.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # do not leave dev/__pycache__ behind
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_models.datatypes import BuiltinTool, StopReason, ToolPromptFormat  # noqa: E402
from llama_models.llama3.tool_utils import ToolUtils  # noqa: E402

from protocol_fixtures import REPO_ROOT, herd_to_raw_messages, make_chat_format  # noqa: E402

SAMPLES = REPO_ROOT / "data" / "samples" / "conversations.jsonl"


def load_conversations() -> list[list[dict]]:
    with open(SAMPLES, encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]


def time_loop(fn, items, seconds: float) -> tuple[int, int, float]:
    """Calls fn on every item, repeating the whole pass until `seconds` elapse.
    Returns (conversations, tokens, elapsed)."""
    convs = toks = 0
    start = time.perf_counter()
    while True:
        for it in items:
            toks += fn(it)
        convs += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return convs, toks, elapsed


def pieces_for(fmt, raw_messages) -> list:
    """The rendering as a list of ints (special-token ids) and strs (text to encode)."""
    sp = fmt.tokenizer.special_tokens

    def header(role: str) -> list:
        return [sp["<|start_header_id|>"], "ipython" if role == "tool" else role, sp["<|end_header_id|>"], "\n\n"]

    out: list = [sp["<|begin_of_text|>"]]
    for m in raw_messages:
        out += header(m.role)
        if m.role == "assistant" and m.tool_calls and m.tool_calls[0].tool_name == BuiltinTool.code_interpreter:
            out.append(sp["<|python_tag|>"])
        out.append(m.content)
        if m.role == "assistant":
            for t in m.tool_calls:
                out.append(ToolUtils.encode_tool_call(t, ToolPromptFormat.json))
        eom = m.role == "assistant" and m.stop_reason == StopReason.end_of_message
        out.append(sp["<|eom_id|>" if eom else "<|eot_id|>"])
    out += header("assistant")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()

    fmt = make_chat_format()
    conversations = load_conversations()
    raws = [herd_to_raw_messages(c) for c in conversations]

    def meta_render(raw) -> int:
        return len(fmt.encode_dialog_prompt(raw, ToolPromptFormat.json).tokens)

    for raw in raws[:3]:  # warm-up
        meta_render(raw)
    n, toks, el = time_loop(meta_render, raws, args.seconds)
    print(json.dumps({
        "impl": "llama-models ChatFormat",
        "conversations_per_s": round(n / el, 1),
        "tokens_per_s": round(toks / el, 1),
        "conversations": len(raws),
        "seconds": round(el, 3),
    }))

    if args.skip_hf:
        return
    from tokenizer_fixtures import build_hf_tokenizer

    hf = build_hf_tokenizer(fmt.tokenizer)
    hf.encode_special_tokens = True
    all_pieces = [pieces_for(fmt, raw) for raw in raws]

    def hf_render(pieces) -> list[int]:
        ids: list[int] = []
        for p in pieces:
            if type(p) is int:
                ids.append(p)
            elif p:
                ids.extend(hf.encode(p, add_special_tokens=False).ids)
        return ids

    for raw, pieces in zip(raws, all_pieces):
        assert hf_render(pieces) == fmt.encode_dialog_prompt(raw, ToolPromptFormat.json).tokens
    n, toks, el = time_loop(lambda p: len(hf_render(p)), all_pieces, args.seconds)
    print(json.dumps({
        "impl": "HF tokenizers (TikTokenConverter, encode_special_tokens=True), piecewise",
        "conversations_per_s": round(n / el, 1),
        "tokens_per_s": round(toks / el, 1),
        "conversations": len(raws),
        "seconds": round(el, 3),
    }))


if __name__ == "__main__":
    main()
