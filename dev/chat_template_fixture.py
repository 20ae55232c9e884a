"""Generate datasets/tests/fixtures/chat_template.json: herd's Llama 3.1 chat template
(datasets/src/chat_template.jinja) applied by Hugging Face transformers to every dialogue of
datasets/tests/fixtures/llama3_protocol.json, checked token for token against different ids again: the typed words stay text but each is encoded as a piece of its own.

How to run (from the repository root)
-------------------------------------
    python3 -m venv .venv-ref && .venv-ref/bin/pip install -r dev/requirements.txt
    .venv-ref/bin/python dev/chat_template_fixture.py

What it checks (and stops on the first failure)
------------------------------------------------
The tokenizer is Meta's real tokenizer.model converted by transformers' TikTokenConverter
(dev/tokenizer_fixtures.py `build_hf_tokenizer`) with the post-processor herd's
`tokenizer.json` carries (`<|begin_of_text|> $A`), saved beside the tokenizer_config.json herd
writes (`tokenizer_config` below, mirrored by datasets/src/chat_template.rs) and loaded back
with `AutoTokenizer.from_pretrained`, so the check covers what a user of an exported checkpoint
gets. For every protocol case (except `empty_dialogue`, which herd refuses and transformers
refuses too), with and without `add_generation_prompt`:

* the rendered text (`apply_chat_template(..., tokenize=False)`) equals the decoding of the
  fixture's ids — the Rust test then checks the same text against herd's `render_text`;
* `apply_chat_template(..., tokenize=True)` gives the fixture's ids exactly, except for the cases
  whose content holds special-token text (a user who types `<|eot_id|>`): transformers splits
  that text into special tokens, where herd (like Meta's tiktoken) keeps it plain text. Those are
  recorded in `special_text_cases`; `sanitize_control_tokens=True` (transformers 5) keeps the
  typed words text but encodes each as a piece of its own, which still differs from herd;
* content starting with a newline merges with the header's "\n\n" when the whole text is
  tokenized (`header_merge_cases`); tokenized piece by piece the ids are herd's.
* BOS appears once: apply_chat_template tokenizes with add_special_tokens=False (the template
  writes <|begin_of_text|>); `tokenizer(text)` with the default add_special_tokens=True doubles
  it (recorded in `bos`).

`extra_cases` are dialogues in other accepted shapes (OpenAI `content: null`, flat tool calls,
`parameters`, `tool` role with `tool_call_id`/`name`); their texts and ids are checked by the
Rust test against herd's renderer. `limits` are inputs where the template cannot match herd or
refuses; each records what happens.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llama_models.llama3.tokenizer import Tokenizer
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "dev"))

from protocol_fixtures import dump  # noqa: E402
from tokenizer_fixtures import build_hf_tokenizer  # noqa: E402

TEMPLATE_PATH = REPO_ROOT / "datasets" / "src" / "chat_template.jinja"
PROTOCOL_PATH = REPO_ROOT / "datasets" / "tests" / "fixtures" / "llama3_protocol.json"
OUT_PATH = REPO_ROOT / "datasets" / "tests" / "fixtures" / "chat_template.json"
TRANSFORMERS_VERSION = "5.23.0"
MODEL_MAX_LENGTH = 131072
BOS_ID = 128000

SPECIAL_TEXT_NOTE = (
    "Content holding special-token text (e.g. a user typing <|eot_id|>): herd and Meta's tiktoken keep "
    "it plain text; transformers' apply_chat_template tokenizes the rendered text with special-token "
    "splitting on, so those words become control tokens. The TEXT is identical; the ids differ. "
    "sanitize_control_tokens=True (transformers 5) keeps the words text but encodes each as a piece of "
    "its own (' ', '<', '|', 'e', ... instead of ' <|', 'e', ...), so the ids still differ from herd's. "
    "A known limit of any text-based chat template."
)


HEADER_MERGE_NOTE = (
    "Content that starts with a newline (e.g. \"\\n\\nhello\") : herd tokenizes the header's \"\\n\\n\" and the "
    "content as separate pieces (as Meta's ChatFormat does), a tokenizer given the whole text merges the "
    "newline runs (\"\\n\\n\\n\\n\" is one token). The TEXT is identical; the ids differ with or without "
    "sanitize_control_tokens. A known limit of any text-based chat template."
)


def tokenizer_config(template: str) -> dict[str, Any]:
    """The tokenizer_config.json herd writes (datasets/src/chat_template.rs `tokenizer_config`):
    the layout of Meta's Llama 3.1 Instruct tokenizer_config.json, with herd's template."""
    names = sorted(Tokenizer.get_instance().special_tokens.items(), key=lambda kv: kv[1])
    return {
        "added_tokens_decoder": {
            str(i): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for name, i in names
        },
        "bos_token": "<|begin_of_text|>",
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|finetune_right_pad_id|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def load_exported_tokenizer(template: str, directory: Path):
    hf = build_hf_tokenizer(Tokenizer.get_instance())
    # herd's tokenizer.json carries this post-processor (datasets/src/tokenizer/pipeline.rs).
    hf.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
        special_tokens=[("<|begin_of_text|>", BOS_ID)],
    )
    hf.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(template), indent=2))
    tok = AutoTokenizer.from_pretrained(str(directory))
    assert tok.chat_template == template
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|eot_id|>"
    assert tok.pad_token_id == 128004, tok.pad_token_id
    return tok


def bare_jinja_render(template: str, messages, generation_prompt: bool) -> str:
    """The template in a plain jinja2 Environment (no trim_blocks/lstrip_blocks, unlike
    transformers'): its whitespace control is explicit, so the text must not change."""
    import jinja2

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = jinja2.Environment()
    env.filters["tojson"] = lambda x, ensure_ascii=False: json.dumps(x, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=generation_prompt)


def apply(tok, messages, generation_prompt: bool, **kwargs):
    return tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, **kwargs)


def has_special_text(tok, messages) -> bool:
    specials = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values()}
    text = json.dumps(messages, ensure_ascii=False)
    return any(s in text for s in specials)


def header_merging_messages(tok, messages) -> list[int]:
    """Indexes of the messages whose body, tokenized after the header's "\n\n" in one text,
    does not split where herd splits it (content starting with a newline, e.g. "\n\nhello")."""
    out = []
    sep = tok.encode("\n\n", add_special_tokens=False, split_special_tokens=True)
    for index, m in enumerate(messages):
        body = m.get("content") or ""
        if m.get("tool_calls"):
            continue  # <|python_tag|> follows the header
        whole = tok.encode("\n\n" + body, add_special_tokens=False, split_special_tokens=True)
        if whole != sep + tok.encode(body, add_special_tokens=False, split_special_tokens=True):
            out.append(index)
    return out


def piecewise_ids(tok, text: str) -> list[int]:
    """The rendered text tokenized the way herd (and Meta's ChatFormat) cuts it: special tokens by
    id, the "\\n\\n" after each header on its own, every other text run on its own. Valid only for
    text without typed special-token text."""
    plain = lambda s: tok.encode(s, add_special_tokens=False, split_special_tokens=True) if s else []  # noqa: E731
    specials = sorted((t.content for t in tok.added_tokens_decoder.values()), key=len, reverse=True)
    pieces = re.split("(" + "|".join(map(re.escape, specials)) + ")", text)
    ids: list[int] = []
    after_header = False
    for piece in pieces:
        if piece in specials:
            ids.append(tok.convert_tokens_to_ids(piece))
            after_header = piece == "<|end_header_id|>"
            continue
        if after_header:
            assert piece.startswith("\n\n"), piece[:10]
            ids += plain("\n\n")
            piece = piece[2:]
        ids += plain(piece)
        after_header = False
    return ids


def extra_cases() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("openai_content_null_and_tool_role", [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}], "end": "eom"},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp_c\": 21.5}"},
            {"role": "assistant", "content": "It is 21.5 \u00b0C in Paris."}]),
        ("flat_tool_call_with_parameters", [
            {"role": "user", "content": "Search"},
            {"role": "assistant", "tool_calls": [{"name": "lookup", "parameters": {"q": "caf\u00e9 \U0001f600", "n": 1.5e-05, "big": 1e16}}]}]),
        ("builtin_flat_and_code_with_quotes", [
            {"role": "system", "content": "Environment: ipython\nTools: brave_search, wolfram_alpha\n"},
            {"role": "user", "content": " q "},
            {"role": "assistant", "tool_calls": [{"name": "wolfram_alpha", "arguments": {"query": "integrate x^2 \u222b"}}], "end": "eom"},
            {"role": "ipython", "content": "x^3/3"},
            {"role": "assistant", "tool_calls": [{"name": "code_interpreter", "arguments": {"code": "print(\"hi\\n\")\n"}}], "end": "eom"},
            {"role": "ipython", "content": "hi\n"},
            {"role": "assistant", "content": "Done.  "}]),
        ("custom_arguments_string_canonical", [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": "{\"a\": [1, 2], \"b\": \"\\u00e9\"}"}}], "end": "eom"}]),
        ("custom_empty_arguments", [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "now"}}]}]),
    ]


def limit_cases() -> list[tuple[str, list[dict[str, Any]], dict[str, Any], str]]:
    """(name, messages, apply kwargs, what happens)."""
    return [
        ("custom_arguments_string_not_in_json_dumps_form", [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": "{\"a\":1,\"b\":\"\u00e9\"}"}}], "end": "eom"}],
         {}, "text differs: a JSON-string arguments value is written verbatim (Jinja cannot parse JSON); "
             "herd parses it and writes json.dumps form. Pass arguments as an object."),
        ("builtin_arguments_as_string", [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "brave_search", "arguments": "{\"query\": \"gold\"}"}}], "end": "eom"}],
         {}, "refused (raise_exception): builtin tool arguments must be an object"),
        ("tools_argument", [{"role": "user", "content": "x"}],
         {"tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}}]},
         "refused (raise_exception): herd never injects a tool preamble; put tool definitions in the system message"),
        ("two_tool_calls", [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": {}}},
                {"type": "function", "function": {"name": "g", "arguments": {}}}]}],
         {}, "refused (raise_exception), as herd refuses it: one tool call per assistant message"),
    ]


def main() -> None:
    got = version("transformers")
    if got != TRANSFORMERS_VERSION:
        sys.exit(f"transformers {TRANSFORMERS_VERSION} required, found {got}")
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    protocol = json.loads(PROTOCOL_PATH.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as directory:
        tok = load_exported_tokenizer(template, Path(directory))
        cases, special_text_cases, header_merge_cases = [], [], []
        identical_ids = identical_sanitized = renderings = 0
        for case in protocol["cases"]:
            name, messages = case["name"], case["messages"]
            if name == "empty_dialogue":
                try:
                    apply(tok, messages, True, tokenize=False)
                    raise AssertionError("transformers rendered an empty conversation")
                except ValueError:
                    continue
            entry: dict[str, Any] = {"name": name}
            for suffix, gen, expected in (("", False, case["ids"]), ("_generation_prompt", True, case["generation_prompt_ids"])):
                text = apply(tok, messages, gen, tokenize=False)
                assert text == tok.decode(expected, skip_special_tokens=False), (name, gen, text)
                assert text == bare_jinja_render(template, messages, gen), (name, gen)
                ids = apply(tok, messages, gen, tokenize=True, return_dict=False)
                assert ids.count(BOS_ID) >= 1 and ids[0] == BOS_ID and ids[1] != BOS_ID, (name, ids[:3])
                special = has_special_text(tok, messages)
                merging = header_merging_messages(tok, messages)
                sanitized = apply(tok, messages, gen, tokenize=True, return_dict=False, sanitize_control_tokens=True)
                if special:
                    assert ids != expected, f"{name}: expected special-token text to be split"
                if not special and not merging:
                    assert ids == expected, f"{name} (generation prompt: {gen}): ids differ"
                    assert sanitized == expected, name
                if merging:
                    assert ids != expected and sanitized != expected, f"{name}: expected the header newlines to merge"
                    # Tokenized piece by piece (header, content) as herd does, the ids are the fixture's.
                    assert piecewise_ids(tok, text) == expected, name
                if special:
                    # sanitize_control_tokens keeps the typed words text, but encodes each as a piece
                    # of its own (" <|eot_id|>" -> " ", "<", "|", ...), so the ids still differ.
                    assert sanitized != expected, f"{name}: sanitize_control_tokens now gives herd's ids"
                    assert BOS_ID in sanitized and sanitized.count(BOS_ID) == 1, name
                identical_ids += ids == expected
                identical_sanitized += sanitized == expected
                renderings += 1
                entry["text" + suffix] = text
                entry["ids_identical" + suffix] = ids == expected
                entry["ids_identical_sanitized" + suffix] = sanitized == expected
            if has_special_text(tok, messages):
                special_text_cases.append(name)
            if header_merging_messages(tok, messages):
                header_merge_cases.append(name)
            cases.append(entry)

        bos_text = apply(tok, protocol["cases"][0]["messages"], False, tokenize=False)
        call_ids = tok(bos_text)["input_ids"]
        bos = {
            "apply_chat_template_tokenize_true": "BOS once: the template writes <|begin_of_text|> and transformers tokenizes the text with add_special_tokens=False",
            "tokenizer_call_default": "BOS twice: tokenizer(text) with add_special_tokens=True adds a second <|begin_of_text|> (the tokenizer.json post-processor); pass add_special_tokens=False",
            "tokenizer_call_default_first_ids": call_ids[:3],
        }
        assert call_ids[:2] == [BOS_ID, BOS_ID], call_ids[:3]

        extras = []
        for name, messages in extra_cases():
            text = apply(tok, messages, False, tokenize=False)
            ids = apply(tok, messages, False, tokenize=True, return_dict=False)
            gen_ids = apply(tok, messages, True, tokenize=True, return_dict=False)
            extras.append({"name": name, "messages": messages, "text": text, "ids": ids,
                           "generation_prompt_ids": gen_ids})

        limits = []
        for name, messages, kwargs, what in limit_cases():
            entry = {"name": name, "messages": messages, "what_happens": what}
            try:
                entry["text"] = apply(tok, messages, False, tokenize=False, **kwargs)
                entry["error"] = None
            except Exception as error:  # jinja2 TemplateError from raise_exception
                entry["text"] = None
                entry["error"] = str(error)
            limits.append(entry)
        assert limits[0]["text"] is not None and all(entry["error"] for entry in limits[1:]), limits

    config = tokenizer_config(template)
    config["chat_template"] = "@@TEMPLATE@@"
    out = {
        "generator": "dev/chat_template_fixture.py",
        "transformers_version": got,
        "template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "tojson": (
            "transformers' chat-template tojson is json.dumps(x, ensure_ascii=False, indent=None, "
            "separators=None, sort_keys=False); the template calls tojson(ensure_ascii=true), which is "
            "exactly Python's json.dumps default (', ' / ': ', \\uXXXX escapes, insertion order, float repr)"
        ),
        "bos": bos,
        "special_text_note": SPECIAL_TEXT_NOTE,
        "special_text_cases": special_text_cases,
        "header_merge_note": HEADER_MERGE_NOTE,
        "header_merge_cases": header_merge_cases,
        "renderings": renderings,
        "identical_ids": identical_ids,
        "identical_ids_sanitized": identical_sanitized,
        "tokenizer_config": config,
        "cases": cases,
        "extra_cases": extras,
        "limits": limits,
    }
    OUT_PATH.write_text(dump(out), encoding="utf-8")
    print(f"wrote {OUT_PATH.relative_to(REPO_ROOT)}: {len(cases)} cases, {renderings} renderings: texts all identical, "
          f"ids identical {identical_ids} (with sanitize_control_tokens=True: {identical_sanitized}); "
          f"special-text cases {special_text_cases}, header-merge cases {header_merge_cases}, "
          f"{len(extras)} extra cases, {len(limits)} limits")


if __name__ == "__main__":
    main()
