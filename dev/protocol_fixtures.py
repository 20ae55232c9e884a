"""Generate datasets/tests/fixtures/llama3_protocol.json: expected token ids of
whole Llama 3.1 dialogues, rendered by Meta's reference
`llama_models.llama3.chat_format.ChatFormat` (llama-models 0.3.0) with the
real tokenizer.model, plus expected texts for herd's system-preamble builder.

How to run (from the repository root)
-------------------------------------
    python3 -m venv .venv-ref && .venv-ref/bin/pip install -r dev/requirements.txt
    .venv-ref/bin/python dev/protocol_fixtures.py

Each case holds the dialogue in herd's message format (`messages`), and
* `ids`: the dialogue rendered without a generation prompt, i.e.
  `ChatFormat.encode_dialog_prompt(messages, ToolPromptFormat.json).tokens`
  with the trailing `_encode_header("assistant")` tokens removed;
* `generation_prompt_ids`: the full `encode_dialog_prompt` tokens (ending with
  an open assistant header);
* `deviation`: null, or why the ids differ from Meta's encoder (see
  PYTHON_TAG_RULE).

The conversion from herd's message format to Meta's RawMessage lives in
`herd_to_raw_messages`, which dev/bench_reference_render.py imports too.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llama_models.datatypes import BuiltinTool, RawMessage, StopReason, ToolCall, ToolPromptFormat
from llama_models.llama3 import tokenizer as meta_tokenizer_module
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "datasets" / "tests" / "fixtures" / "llama3_protocol.json"
TOKENIZER_MODEL_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
LLAMA_MODELS_VERSION = "0.3.0"
PYTHON_TAG_ID = 128010

PYTHON_TAG_RULE = (
    "Every assistant message that makes a tool call (brave_search, wolfram_alpha, code_interpreter or a "
    "custom JSON tool) starts its body with <|python_tag|> (128010), as llama3_1/prompt_format.md shows; "
    "Meta's ChatFormat.encode_message adds it only for code_interpreter, so for the other tool calls it is "
    "inserted right after the assistant header and the case is marked with a deviation."
)
DEVIATION = "python_tag inserted per llama3_1/prompt_format.md"

BUILTIN_TOOLS = {"brave_search", "wolfram_alpha", "code_interpreter"}


# ---------------------------------------------------------------------------
# herd message format -> Meta RawMessage
# ---------------------------------------------------------------------------


def herd_tool_call_to_meta(tc: dict[str, Any]) -> ToolCall:
    assert tc.get("type", "function") == "function", tc
    fn = tc["function"]
    name = fn["name"]
    args = fn.get("arguments", {})
    if isinstance(args, str):
        args = json.loads(args)
    assert isinstance(args, dict), f"tool arguments must be a JSON object: {args!r}"
    if name in ("brave_search", "wolfram_alpha"):
        assert set(args) == {"query"}, args
    elif name == "code_interpreter":
        assert set(args) == {"code"}, args
    tool_name = BuiltinTool(name) if name in BUILTIN_TOOLS else name
    # model_construct: keep the arguments exactly as given (pydantic's
    # RecursiveType would reject objects nested more than one level deep).
    return ToolCall.model_construct(call_id="call_0", tool_name=tool_name, arguments=args, arguments_json=None)


def herd_to_raw_message(m: dict[str, Any]) -> RawMessage:
    role = m["role"]
    assert role in ("system", "user", "assistant", "ipython", "tool"), role
    content = m.get("content", "")
    if content is None:
        content = ""
    if role in ("ipython", "tool"):
        return RawMessage(role="tool", content=content)
    if role != "assistant":
        assert "tool_calls" not in m and "end" not in m, m
        return RawMessage(role=role, content=content)
    tool_calls = [herd_tool_call_to_meta(tc) for tc in m.get("tool_calls") or []]
    assert len(tool_calls) <= 1, "at most one tool call per assistant message"
    if tool_calls:
        assert content == "", "an assistant message with a tool call must have empty content"
    end = m.get("end", "eot")
    assert end in ("eot", "eom"), end
    stop = StopReason.end_of_message if end == "eom" else StopReason.end_of_turn
    return RawMessage.model_construct(role="assistant", content=content, context=None, stop_reason=stop, tool_calls=tool_calls)


def herd_to_raw_messages(messages: list[dict[str, Any]]) -> list[RawMessage]:
    return [herd_to_raw_message(m) for m in messages]


def needs_python_tag_insert(m: dict[str, Any]) -> bool:
    """Tool-call assistant messages other than code_interpreter (which Meta already tags)."""
    if m["role"] != "assistant" or not m.get("tool_calls"):
        return False
    return m["tool_calls"][0]["function"]["name"] != "code_interpreter"


def render(fmt: ChatFormat, messages: list[dict[str, Any]]) -> tuple[list[int], list[int], bool]:
    """Returns (ids, generation_prompt_ids, deviated)."""
    raw = herd_to_raw_messages(messages)
    meta_full = fmt.encode_dialog_prompt(raw, ToolPromptFormat.json).tokens
    gen_header = fmt._encode_header("assistant")
    assert meta_full[-len(gen_header):] == gen_header, "missing trailing assistant header"
    meta_ids = meta_full[: -len(gen_header)]

    # Re-assemble message by message to find where the tags go, and check that
    # without the insertions it is exactly Meta's output.
    plain = [fmt.tokenizer.special_tokens["<|begin_of_text|>"]]
    ours = list(plain)
    deviated = False
    for m, r in zip(messages, raw):
        toks, _ = fmt.encode_message(r, ToolPromptFormat.json)
        plain.extend(toks)
        if needs_python_tag_insert(m):
            header = fmt._encode_header("assistant")
            assert toks[: len(header)] == header
            assert toks[len(header)] != PYTHON_TAG_ID
            toks = toks[: len(header)] + [PYTHON_TAG_ID] + toks[len(header):]
            deviated = True
        elif m["role"] == "assistant" and m.get("tool_calls"):
            header = fmt._encode_header("assistant")
            assert toks[len(header)] == PYTHON_TAG_ID  # code_interpreter: Meta adds it
        ours.extend(toks)
    assert plain == meta_ids, "per-message assembly differs from encode_dialog_prompt"
    return ours, ours + gen_header, deviated


# ---------------------------------------------------------------------------
# Dialogue cases (herd format)
# ---------------------------------------------------------------------------

PREAMBLE_SYSTEM = (
    "Environment: ipython\nTools: brave_search, wolfram_alpha\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant."
)

DOC_BUILTIN_SYSTEM = (
    "Environment: ipython\nTools: brave_search, wolfram_alpha\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n"
)

DOC_WOLFRAM_RESULT = """
{
    "queryresult": {
        "success": true,
        "inputstring": "100th decimal of pi",
        "pods": [
            {
                "title": "Input interpretation",
                "subpods": [
                    {
                        "title": "",
                        "plaintext": "100th digit | \u03c0"
                    }
                ]
            },
            {
                "title": "Result",
                "primary": true,
                "subpods": [
                    {
                        "title": "",
                        "plaintext": "7"
                    }
                ]
            }
        ]
    }
}
"""

LONG_MARKDOWN = """## Choosing a learning-rate schedule

When fine-tuning a model such as Llama 3.1 8B, the learning-rate schedule matters almost as much as the peak value.

### 1. Warmup

Start from zero and increase linearly over the first **3-10%** of steps. This keeps the early updates, computed with a freshly initialised optimizer state, from destabilising the pretrained weights.

### 2. Decay

After warmup, the common choices are:

| Schedule | Formula | Notes |
|----------|---------|-------|
| Linear   | `lr * (1 - t/T)` | simple, robust |
| Cosine   | `lr * 0.5 * (1 + cos(pi * t/T))` | most popular |
| Constant | `lr` | fine for short runs |

### 3. A worked example

```python
import math

def lr_at(step, total, peak=2e-5, warmup=100):
    if step < warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
```

> Tip: log the learning rate every step; a schedule bug is much easier to spot in a plot than in the loss curve.

In short: **warm up, then decay with cosine**, and only tune the peak value if the loss curve tells you to."""


def tc(name: str, arguments: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, "arguments": arguments}}]


def dialogue_cases() -> list[tuple[str, list[dict[str, Any]]]]:
    U = lambda c: {"role": "user", "content": c}  # noqa: E731
    A = lambda c, **kw: {"role": "assistant", "content": c, **kw}  # noqa: E731
    S = lambda c: {"role": "system", "content": c}  # noqa: E731
    I = lambda c: {"role": "ipython", "content": c}  # noqa: E731,E741

    nested_args = {
        "location": {"city": "Zürich", "country": "CH", "coords": [47.3769, 8.5417]},
        "days": 3,
        "units": "metric",
        "include_hourly": False,
        "alerts": True,
        "thresholds": {"wind_kmh": 50, "rain_mm": 12.5, "uv": None},
        "tags": ["ski", "hike", "\u65e5\u672c\u8a9e", "caf\u00e9 \U0001f600"],
        "note": 'He said "bring a \\ backslash"\nand\ta tab',
        "empty_list": [],
        "empty_obj": {},
        "negative": -7,
        "big": 12345678901234567890,
    }

    cases: list[tuple[str, list[dict[str, Any]]]] = [
        ("single_user_turn", [U("Hello! Who are you?")]),
        (
            "system_user_assistant",
            [S("You are a helpful assistant"), U("Answer who are you in the form of jeopardy?"),
             A('Here\'s my response\n\n"What is a helpful assistant?"')],
        ),
        (
            "multi_turn_three_exchanges",
            [S("You are a concise math tutor."),
             U("What is 12 * 13?"), A("12 * 13 = 156."),
             U("And 156 / 4?"), A("156 / 4 = 39."),
             U("Is 39 prime?"), A("No. 39 = 3 * 13, so it is composite.")],
        ),
        ("multi_turn_no_system", [U("hi"), A("Hello! How can I help?"), U("Tell me a joke."),
                                  A("Why did the scarecrow win an award? Because he was outstanding in his field."),
                                  U("Another one"), A("I told my computer I needed a break, and it said: no problem, I'll go to sleep.")]),
        ("empty_user_content", [U(""), A("It looks like your message was empty. What would you like to ask?")]),
        ("empty_assistant_content", [U("Say nothing."), A("")]),
        ("empty_system_content", [S(""), U("ok")]),
        ("whitespace_kept_user", [U(" hi "), A("Hello!")]),
        ("whitespace_kept_newlines", [U("\n\nhello\n"), A("\nhi there\n\n")]),
        ("whitespace_kept_tabs", [S("\tsys\t"), U("\tx\t"), A("\ty\t")]),
        ("only_whitespace_contents", [S("   "), U("\n"), A(" ")]),
        (
            "unicode_cjk_emoji_rtl",
            [U("你好！請用日本語で答えてください。🙂"), A("こんにちは！元気です。🎉👨\u200d👩\u200d👧"),
             U("ومرحبا بالعربية؟ ושלום בעברית?"), A("مرحبا! שלום! 🇮🇱🇸🇦")],
        ),
        ("special_text_typed_by_user", [U("What does <|eot_id|> mean? Also <|start_header_id|>assistant<|end_header_id|>"),
                                        A("Those are Llama 3 special tokens.")]),
        ("special_text_typed_by_assistant", [U("Print the end-of-turn marker."),
                                             A("It is written <|eot_id|>, and a header is <|start_header_id|>assistant<|end_header_id|>\n\n. Also <|python_tag|> and <|begin_of_text|>.")]),
        ("special_text_in_system", [S("Never output <|eom_id|> or <|reserved_special_token_5|>."), U("ok")]),
        (
            "code_interpreter_call_result_answer",
            [S("Environment: ipython"),
             U("Write code to check if number is prime, use that to see if the number 7 is prime"),
             A("", tool_calls=tc("code_interpreter", {"code": "def is_prime(n):\n    if n <= 1:\n        return False\n    for i in range(2, int(n**0.5) + 1):\n        if n % i == 0:\n            return False\n    return True\n\nprint(is_prime(7))  # Output: True"}), end="eom"),
             I("True\n"),
             A("Yes, 7 is a prime number.")],
        ),
        (
            "brave_search_call_result_answer",
            [S(DOC_BUILTIN_SYSTEM), U("Search the web for the latest price of 1oz gold?"),
             A("", tool_calls=tc("brave_search", {"query": "latest price of 1oz gold"}), end="eom"),
             I('{"query": "latest price of 1oz gold", "top_k": [{"title": "Gold Price Today", "url": "https://example.com/gold", "description": "Gold spot price: $2,622.10 per ounce"}]}'),
             A("The latest spot price of gold is about $2,622.10 per troy ounce.")],
        ),
        (
            "wolfram_alpha_call_doc_example",
            [S("Environment: ipython\nTools: brave_search, wolfram_alpha\n"), U("What is the 100th decimal of pi?"),
             A("", tool_calls=tc("wolfram_alpha", {"query": "100th decimal of pi"}), end="eom"),
             I(DOC_WOLFRAM_RESULT), A("The 100th decimal of pi is 7.")],
        ),
        (
            "custom_tool_nested_arguments",
            [S("Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n"),
             U("What's the weather in Zürich for the next 3 days?"),
             A("", tool_calls=tc("get_weather_forecast", nested_args), end="eom"),
             I('{"forecast": [{"day": 1, "high_c": 14, "low_c": 6, "summary": "sunny"}]}'),
             A("Zürich: sunny, highs around 14 °C and lows around 6 °C.")],
        ),
        (
            "custom_tool_arguments_as_json_string",
            [U("Use tools to get latest trending songs"),
             A("", tool_calls=tc("trending_songs", '{"n": "10", "genre": "all"}'), end="eom")],
        ),
        (
            "custom_tool_call_end_eot",
            [U("Book a table for two at 7pm."),
             A("", tool_calls=tc("book_table", {"people": 2, "time": "19:00", "confirm": True}))],
        ),
        (
            "custom_tool_with_content_absent",
            [U("ping the server"),
             {"role": "assistant", "tool_calls": tc("ping", {"host": "10.0.0.1", "count": 3}), "end": "eom"},
             {"role": "tool", "content": "3 packets transmitted, 3 received, 0% packet loss"},
             A("The server at 10.0.0.1 is reachable (0% packet loss).")],
        ),
        (
            "tool_role_alias",
            [S("Environment: ipython"), U("Compute 2**100 with python."),
             A("", tool_calls=tc("code_interpreter", {"code": "print(2**100)"}), end="eom"),
             {"role": "tool", "content": "1267650600228229401496703205376"},
             A("2**100 = 1267650600228229401496703205376.")],
        ),
        ("assistant_eom_without_tool_call", [U("Think step by step."), A("Let me check something first.", end="eom"),
                                             U("go on"), A("Done.", end="eot")]),
        ("llama31_preamble_in_system", [S(PREAMBLE_SYSTEM), U("Who won the 2022 World Cup?"),
                                        A("Argentina won the 2022 FIFA World Cup, beating France on penalties in the final.")]),
        ("long_markdown_answer", [U("How should I choose a learning-rate schedule for fine-tuning?"), A(LONG_MARKDOWN)]),
        ("ends_with_user_turn", [S("You are a helpful assistant."), U("What is the capital of France?"),
                                 A("The capital of France is Paris."), U("And of Germany?")]),
        ("system_only", [S("You are a helpful assistant.")]),
        ("empty_dialogue", []),
        ("digits_and_whitespace_runs", [U("Numbers: 12345678901234567890 3.14159 1,000,000\n\n\n\n" + " " * 40 + "end"),
                                        A("Echo:\t\t\t" + "1" * 50 + "\r\n" + " " * 17 + "x")]),
        ("code_block_answer", [U("Reverse a string in Rust."),
                               A("```rust\nfn reverse(s: &str) -> String {\n    s.chars().rev().collect()\n}\n```\n\nNote: this reverses `char`s, not grapheme clusters.")]),
        ("consecutive_user_messages", [U("first"), U("second"), A("ok")]),
        ("assistant_first", [A("Hi, I'm here to help."), U("thanks")]),
    ]
    names = [n for n, _ in cases]
    assert len(names) == len(set(names))
    return cases


# ---------------------------------------------------------------------------
# System preamble builder
# ---------------------------------------------------------------------------
#
# Rule inferred from the examples in llama_models/llama3_1/prompt_format.md
# (they are reproduced byte-exactly below). Every line the builder writes ends
# with "\n":
#   1. "Environment: ipython"                     if environment_ipython
#   2. "Tools: " + ", ".join(builtin_tools)       if any builtin tools
#      (code_interpreter is never listed: "Environment: ipython" enables it)
#   3. "Cutting Knowledge Date: <date>"           if set
#   4. "Today Date: <date>"                       if set
#   5. instructions (written as given)            if set
# Blank lines ("\n"):
#   * between the Environment line and the date lines when there is NO Tools
#     line (the JSON tool-calling examples show "Environment: ipython\n\nCutting
#     ..."; with a Tools line the date lines follow directly, as in the builtin
#     example "Tools: brave_search, wolfram_alpha\nCutting ..."). This is the
#     output of Meta's Jinja template, where the Environment line keeps its
#     newline and the Tools line does not, and a "\n" follows the tool block;
#   * before the instructions, if anything was written above them.
# Exception: a preamble that is a single line (only the Environment line, only
# the Tools line, only one date, or only the instructions) has no trailing
# "\n" (the document's "Environment: ipython" code-interpreter example and the
# plain "You are a helpful assistant" conversation example).
# Nothing set -> "".


def build_preamble(environment_ipython: bool, builtin_tools: list[str], cutting_knowledge_date: str | None,
                   today_date: str | None, instructions: str | None) -> str:
    assert all(t in ("brave_search", "wolfram_alpha") for t in builtin_tools), builtin_tools
    lines: list[str] = []  # each entry is one line, or "" for a blank line
    if environment_ipython:
        lines.append("Environment: ipython")
    if builtin_tools:
        lines.append("Tools: " + ", ".join(builtin_tools))
    dates = []
    if cutting_knowledge_date is not None:
        dates.append(f"Cutting Knowledge Date: {cutting_knowledge_date}")
    if today_date is not None:
        dates.append(f"Today Date: {today_date}")
    if dates:
        if environment_ipython and not builtin_tools:
            lines.append("")
        lines.extend(dates)
    if instructions is not None:
        if lines:
            lines.append("")
        lines.append(instructions)
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0]
    return "".join(line + "\n" for line in lines)


DOC_PREAMBLES = [
    # (name, builder args, text exactly as in prompt_format.md)
    (
        'doc "User and assistant conversation": "You are a helpful assistant"',
        (False, [], None, None, "You are a helpful assistant"),
        "You are a helpful assistant",
    ),
    (
        'doc "Builtin Tool Calling": "Environment: ipython\\nTools: brave_search, wolfram_alpha\\nCutting Knowledge Date: December 2023\\nToday Date: 21 September 2024\\n\\nYou are a helpful assistant.\\n"',
        (True, ["brave_search", "wolfram_alpha"], "December 2023", "21 September 2024", "You are a helpful assistant."),
        DOC_BUILTIN_SYSTEM,
    ),
    (
        'doc "Builtin Code Interpreter": "Environment: ipython"',
        (True, [], None, None, None),
        "Environment: ipython",
    ),
    (
        'doc "Built-in tools full interaction": "Environment: ipython\\nTools: brave_search, wolfram_alpha\\n"',
        (True, ["brave_search", "wolfram_alpha"], None, None, None),
        "Environment: ipython\nTools: brave_search, wolfram_alpha\n",
    ),
    (
        'doc "JSON based tool calling" and "<function> based tool calling": "Environment: ipython\\n\\nCutting Knowledge Date: December 2023\\nToday Date: 21 September 2024\\n\\nYou are a helpful assistant.\\n"',
        (True, [], "December 2023", "21 September 2024", "You are a helpful assistant."),
        "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n",
    ),
]

COMBINATION_PREAMBLES = [
    ("nothing_set", (False, [], None, None, None)),
    ("dates_only", (False, [], "December 2023", "21 September 2024", None)),
    ("dates_and_instructions", (False, [], "December 2023", "21 September 2024", "You are a helpful assistant.")),
    ("environment_and_instructions", (True, [], None, None, "Answer briefly.")),
    ("environment_tools_and_instructions_no_dates", (True, ["brave_search", "wolfram_alpha"], None, None, "You are a helpful assistant.")),
    ("environment_brave_only_with_dates", (True, ["brave_search"], "December 2023", "21 September 2024", "You are a helpful assistant.")),
    ("environment_wolfram_only_no_instructions", (True, ["wolfram_alpha"], "December 2023", "21 September 2024", None)),
    ("tools_order_as_given", (True, ["wolfram_alpha", "brave_search"], "December 2023", None, None)),
    ("tools_without_environment", (False, ["brave_search"], "December 2023", "21 September 2024", "Be nice.")),
    ("environment_and_cutting_date_only", (True, [], "December 2023", None, None)),
    ("today_date_only", (False, [], None, "21 September 2024", None)),
    ("multiline_instructions", (True, [], "December 2023", "01 January 2025", "You are a pirate.\n\nAlways answer in rhymes.")),
]


def preamble_cases() -> list[dict[str, Any]]:
    out = []
    for name, args, expected in DOC_PREAMBLES:
        got = build_preamble(*args)
        assert got == expected, f"{name}: rule gives {got!r}, document has {expected!r}"
        out.append({"name": name, "builder": builder_json(args), "text": got})
    for name, args in COMBINATION_PREAMBLES:
        out.append({"name": name, "builder": builder_json(args), "text": build_preamble(*args)})
    return out


def builder_json(args: tuple) -> dict[str, Any]:
    env, tools, ckd, today, instr = args
    return {"environment_ipython": env, "builtin_tools": list(tools), "cutting_knowledge_date": ckd,
            "today_date": today, "instructions": instr}


# ---------------------------------------------------------------------------


def dump(obj: dict) -> str:
    """Indented JSON, with every list of ints on one line."""
    placeholders: dict[str, str] = {}

    def compact(x):
        if isinstance(x, list) and x and all(type(v) is int for v in x):
            key = f"@@IDS{len(placeholders)}@@"
            placeholders[key] = json.dumps(x, separators=(",", ":"))
            return key
        if isinstance(x, dict):
            return {k: compact(v) for k, v in x.items()}
        if isinstance(x, list):
            return [compact(v) for v in x]
        return x

    text = json.dumps(compact(obj), ensure_ascii=False, indent=1)
    for key, val in placeholders.items():
        text = text.replace(f'"{key}"', val, 1)
    return text + "\n"


def make_chat_format() -> ChatFormat:
    got = version("llama_models")
    if got != LLAMA_MODELS_VERSION:
        sys.exit(f"llama-models {LLAMA_MODELS_VERSION} required, found {got}")
    path = Path(meta_tokenizer_module.__file__).parent / "tokenizer.model"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha != TOKENIZER_MODEL_SHA256:
        sys.exit(f"tokenizer.model sha256 mismatch: expected {TOKENIZER_MODEL_SHA256}, got {sha}")
    return ChatFormat(Tokenizer.get_instance())


def main() -> None:
    fmt = make_chat_format()
    cases = []
    for name, messages in dialogue_cases():
        ids, gen_ids, deviated = render(fmt, messages)
        # Sanity: the text decodes back to something containing every content verbatim.
        decoded = fmt.tokenizer.decode(ids)
        for m in messages:
            if m.get("content"):
                assert m["content"] in decoded, (name, m["content"][:40])
        cases.append({
            "name": name,
            "messages": messages,
            "ids": ids,
            "generation_prompt_ids": gen_ids,
            "deviation": DEVIATION if deviated else None,
        })
    preambles = preamble_cases()
    out = {
        "generator": "dev/protocol_fixtures.py",
        "llama_models_version": version("llama_models"),
        "tokenizer_model_sha256": TOKENIZER_MODEL_SHA256,
        "python_tag_rule": PYTHON_TAG_RULE,
        "cases": cases,
        "preambles": preambles,
    }
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(dump(out), encoding="utf-8")
    n_dev = sum(1 for c in cases if c["deviation"])
    print(f"wrote {OUT_PATH.relative_to(REPO_ROOT)}: {len(cases)} cases ({n_dev} with deviation), {len(preambles)} preambles")


if __name__ == "__main__":
    main()
