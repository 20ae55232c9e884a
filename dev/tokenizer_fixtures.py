"""Generate datasets/tests/fixtures/llama3_tokenizer.json: reference token ids
for Meta's Llama 3 / 3.1 tokenizer.

What it writes
--------------
* `special_tokens`: all 256 special tokens ([text, id], in id order),
  `num_base_tokens` and the pre-tokenizer `pattern`, exactly as
  `llama_models.llama3.tokenizer.Tokenizer` defines them.
* `cases`: a broad sample of texts (prose, code, numbers, many scripts, emoji,
  whitespace runs, control characters, special-token names written literally,
  30,000-character runs) with the ids that Meta's own
  `Tokenizer.get_instance().encode(text, bos=False, eos=False)` produces.
  That encode treats special-token text as plain text and splits runs of more
  than 25,000 whitespace / non-whitespace characters before calling tiktoken.
  The script asserts `decode(ids) == text` for every case.
* `hf_converter_*`: sha256 of canonical forms of the vocab and merges of the
  Hugging Face tokenizer that `transformers.convert_slow_tokenizer.
  TikTokenConverter` builds from the same tokenizer.model (see
  `canonical_vocab_bytes` / `canonical_merges_bytes` below), so a Rust test can
  hash herd's own import the same way.
* `hf_differs_from_meta`: names of the cases where that HF tokenizer (with
  `encode_special_tokens = True`) gives ids different from Meta's encode.
  Expected: only the cases with runs longer than 25,000 characters, where
  Meta's chunking changes the result.

How to run (from the repository root)
-------------------------------------
    python3 -m venv .venv-ref && .venv-ref/bin/pip install -r dev/requirements.txt
    .venv-ref/bin/python dev/tokenizer_fixtures.py

It reads the real tokenizer.model shipped inside the llama-models 0.3.0 wheel
(the same file dev/fetch-llama3-tokenizer.sh puts at .cache/llama3/) and
checks its sha256. No network access is needed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import tiktoken
from importlib.metadata import version

from llama_models.llama3 import tokenizer as meta_tokenizer_module
from llama_models.llama3.tokenizer import Tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "datasets" / "tests" / "fixtures" / "llama3_tokenizer.json"
TOKENIZER_MODEL_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
LLAMA_MODELS_VERSION = "0.3.0"


def tokenizer_model_path() -> Path:
    return Path(meta_tokenizer_module.__file__).parent / "tokenizer.model"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_environment() -> None:
    got = version("llama_models")
    if got != LLAMA_MODELS_VERSION:
        sys.exit(f"llama-models {LLAMA_MODELS_VERSION} required, found {got}")
    sha = sha256_file(tokenizer_model_path())
    if sha != TOKENIZER_MODEL_SHA256:
        sys.exit(f"tokenizer.model sha256 mismatch: expected {TOKENIZER_MODEL_SHA256}, got {sha}")


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

PYTHON_TABS = (
    "class Stack:\n"
    "\tdef __init__(self):\n"
    "\t\tself.items = []\n"
    "\n"
    "\tdef push(self, x):\n"
    "\t\tself.items.append(x)\n"
    "\t\treturn len(self.items)\n"
)

PYTHON_SPACES = (
    "def fib(n: int) -> int:\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n"
    "\n"
    "if __name__ == '__main__':\n"
    "    print([fib(i) for i in range(10)])  # [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n"
)

RUST_CODE = (
    "use std::collections::HashMap;\n\n"
    "fn word_counts(text: &str) -> HashMap<&str, usize> {\n"
    "    let mut m = HashMap::new();\n"
    "    for w in text.split_whitespace() {\n"
    "        *m.entry(w).or_insert(0) += 1;\n"
    "    }\n"
    "    m\n"
    "}\n\n"
    "impl<'a> Iterator for Tokens<'a> {\n"
    "    type Item = &'a [u8];\n"
    "    fn next(&mut self) -> Option<Self::Item> { self.inner.next() }\n"
    "}\n"
)

JSON_TEXT = (
    '{\n  "name": "herd",\n  "version": "0.1.0",\n  "lr": 2e-5,\n'
    '  "layers": [0, 1, 2, 31],\n  "nested": {"ok": true, "none": null, "pi": 3.14159},\n'
    '  "escaped": "line\\nbreak \\"quoted\\" \\u00e9"\n}'
)

HTML_TEXT = (
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Test &amp; page</title></head>\n"
    "<body>\n  <div class=\"a b\" id='x'>Hello, <b>world</b>!&nbsp;&lt;tag&gt;</div>\n"
    "  <script>const x = a => a * 2; console.log(`v=${x(21)}`);</script>\n</body>\n</html>\n"
)

SHELL_TEXT = "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.jsonl; do wc -l \"$f\" | awk '{print $1}'; done 2>&1 >/dev/null\n"

SQL_TEXT = "SELECT u.id, COUNT(*) AS n\nFROM users u JOIN orders o ON o.user_id = u.id\nWHERE o.total >= 100.50\nGROUP BY u.id\nHAVING n > 3;"

MARKDOWN_TEXT = (
    "# Title\n\n## Sub-title\n\n- item one\n- item **two**\n  - nested `code`\n\n"
    "1. first\n2. second\n\n> quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```\n"
)

LATEX_TEXT = r"The integral $\int_0^\infty e^{-x^2}\,dx = \frac{\sqrt{\pi}}{2}$ and $\sum_{n=1}^{\infty} \frac{1}{n^2} = \frac{\pi^2}{6}$."

ALL_SPECIAL_NAMES = (
    "<|begin_of_text|><|end_of_text|><|reserved_special_token_0|><|reserved_special_token_1|>"
    "<|finetune_right_pad_id|><|step_id|><|start_header_id|><|end_header_id|><|eom_id|><|eot_id|>"
    "<|python_tag|><|image|><|reserved_special_token_2|><|reserved_special_token_247|>"
)


def build_cases() -> list[tuple[str, str]]:
    c: list[tuple[str, str]] = [
        # --- trivial -----------------------------------------------------------
        ("empty", ""),
        ("single_space", " "),
        ("single_letter", "a"),
        ("single_newline", "\n"),
        # --- English prose -----------------------------------------------------
        ("english_sentence", "The quick brown fox jumps over the lazy dog."),
        (
            "english_paragraphs",
            "Large language models are trained on vast amounts of text. They learn statistical "
            "patterns, not facts per se; nevertheless, they can be surprisingly accurate!\n\n"
            "Fine-tuning (e.g., SFT, DPO, or RLHF) adapts a pretrained model to follow instructions.\n",
        ),
        ("punctuation_mix", "Wait... what?! (Really?) Yes -- no; maybe: \"quoted\" and 'single' [brackets] {braces} <angles>."),
        ("urls_and_emails", "See https://example.com/a/b?c=1&d=two#frag or mail jane.doe+tag@example.org."),
        ("contractions_lower", "it's we'll they've I'd you're don't can't won't shouldn't y'all"),
        ("contractions_upper", "I'M SURE WE'LL GO. DON'T STOP! THEY'VE LEFT; IT'S FINE. YOU'D KNOW."),
        ("contractions_mixed_case", "I'm We'Ll tHeY'rE It'S dOn'T"),
        ("apostrophe_variants", "rock 'n' roll, '90s, the dogs' bowls, ’curly’ ‘quotes’"),
        ("case_variants", "hello Hello HELLO hElLo HeLLo"),
        # --- numbers -----------------------------------------------------------
        ("digits_long", "12345678901234567890"),
        ("pi", "3.14159"),
        ("thousands", "1,000,000"),
        ("numbers_mixed", "In 2024, 37.5% of 1,234 users paid $9.99/mo; ids: 007, 0x1F, 1e-10, -42, +3."),
        ("phone_and_date", "Call +1 (555) 123-4567 on 2024-09-21T14:30:00Z."),
        ("digits_letters_alternating", "a1b22c333d4444e55555"),
        # --- code --------------------------------------------------------------
        ("python_tabs", PYTHON_TABS),
        ("python_spaces", PYTHON_SPACES),
        ("rust", RUST_CODE),
        ("json", JSON_TEXT),
        ("html", HTML_TEXT),
        ("shell", SHELL_TEXT),
        ("sql", SQL_TEXT),
        ("markdown", MARKDOWN_TEXT),
        ("latex", LATEX_TEXT),
        # --- unicode -----------------------------------------------------------
        ("chinese", "大型语言模型是一种人工智能模型，它使用深度学习技术来理解和生成自然语言。"),
        ("japanese", "東京は日本の首都です。ひらがな、カタカナ、漢字を使います。ﾊﾝｶｸ"),
        ("korean", "안녕하세요! 저는 한국어를 조금 할 수 있어요."),
        ("arabic", "مرحبا بالعالم! كيف حالك اليوم؟ ١٢٣٤٥"),
        ("hebrew", "שלום עולם, מה שלומך? זה טקסט בעברית."),
        ("hindi", "नमस्ते दुनिया! आप कैसे हैं? १२३"),
        ("thai", "สวัสดีครับ ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ"),
        ("russian", "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю."),
        ("greek", "Καλημέρα κόσμε· ΑΒΓΔ αβγδ"),
        ("accented_latin", "Crème brûlée, naïve café, Ångström, Straße, smørrebrød, Łódź, São Paulo, ﬁ ligature"),
        ("combining_marks", "e\u0301 a\u0300 n\u0303 o\u0308\u0304 Z\u0351\u0352\u0353alg\u0489o"),
        ("emoji_simple", "I love 🦀 and 🐍! 😀😃😄 👍"),
        ("emoji_zwj", "family 👨\u200d👩\u200d👧\u200d👦 technologist 👩🏽\u200d💻 rainbow flag 🏳️\u200d🌈"),
        ("emoji_flags", "🇫🇷🇩🇪🇯🇵🇺🇸 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"),
        ("emoji_skin_tones_keycaps", "👋🏻👋🏿 1️⃣ #️⃣ ©️ ™"),
        ("mixed_scripts", "English, 中文, 日本語, 한국어, العربية, עברית, हिन्दी and emoji 🎉 in one line."),
        ("math_symbols", "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|; ∑ ∏ ∫ ≈ ≠ ≤ ∞ ° µ Ω"),
        ("astral_plane", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝒳 \U0001f9ec \U00020000\U0002a6d6"),
        # --- whitespace --------------------------------------------------------
        ("leading_trailing_spaces", "   hello world   "),
        ("double_newline", "first paragraph\n\nsecond paragraph"),
        ("only_double_newline", "\n\n"),
        ("crlf", "line one\r\nline two\r\n\r\nline four\r\n"),
        ("lone_cr", "a\rb\r\rc"),
        ("tabs", "\tindented\n\t\tdouble\tinner\ttabs\t\n"),
        ("spaces_10", " " * 10),
        ("spaces_100", " " * 100),
        ("spaces_1000", " " * 1000),
        ("spaces_10_then_word", " " * 10 + "word"),
        ("newlines_100", "\n" * 100),
        ("mixed_spaces_newlines", "a \n \n  b  \n\n\n   c \t \n"),
        ("spaces_before_newline", "x   \n   y"),
        ("trailing_newlines_after_word", "end.\n\n\n"),
        ("space_then_punct", "a ... b !!! c ??? d"),
        ("nbsp", "100\u00a0km and\u00a0\u00a0two"),
        ("zero_width", "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj"),
        ("line_separator", "line\u2028separator\u2029paragraph"),
        ("unicode_spaces", "em\u2003space thin\u2009space ideographic\u3000space narrow\u202fnbsp"),
        ("control_chars", "nul\u0000esc\u001b[31mred\u001b[0m bell\u0007 del\u007f vt\u000b ff\u000c"),
        ("c1_controls", "c1\u0085nel\u0080\u009f"),
        # --- Meta's 25,000-character chunking -------------------------------------
        ("spaces_30000_then_x", " " * 30000 + "x"),
        ("a_30000", "a" * 30000),
        ("spaces_25000_then_x", " " * 25000 + "x"),
        ("a_25001", "a" * 25001),
        # --- special-token names written as text (must encode as plain text) ------
        ("special_eot_literal", "<|eot_id|>"),
        ("special_header_literal", "<|begin_of_text|>hi<|start_header_id|>"),
        ("special_all_names_literal", ALL_SPECIAL_NAMES),
        (
            "special_fake_dialogue_literal",
            "<|start_header_id|>assistant<|end_header_id|>\n\nSure!<|eot_id|> and <|python_tag|>print(1)<|eom_id|>",
        ),
        ("special_near_misses", "<|eot_id| <eot_id|> <|EOT_ID|> < |eot_id| > <|reserved_special_token_999|>"),
    ]
    names = [n for n, _ in c]
    assert len(names) == len(set(names)), "duplicate case names"
    return c


# ---------------------------------------------------------------------------
# HF converter and canonical hashes
# ---------------------------------------------------------------------------


def canonical_vocab_bytes(vocab: dict[str, int], num_base_tokens: int) -> bytes:
    """f"{id}\\t{token_string}\\n" for ids 0..num_base_tokens-1 in id order, UTF-8.

    token_string is the GPT-2 byte-level (bytes_to_unicode) string as stored in
    tokenizer.json's model.vocab.
    """
    by_id: dict[int, str] = {}
    for s, i in vocab.items():
        if i < num_base_tokens:
            assert i not in by_id, f"id {i} twice in vocab"
            by_id[i] = s
    assert sorted(by_id) == list(range(num_base_tokens)), "vocab ids are not 0..N-1"
    return "".join(f"{i}\t{by_id[i]}\n" for i in range(num_base_tokens)).encode("utf-8")


def canonical_merges_bytes(merges: list) -> bytes:
    """f"{left} {right}\\n" per merge in stored order, UTF-8."""
    out = []
    for m in merges:
        if isinstance(m, str):
            left, right = m.split(" ")  # byte-level strings never contain a plain space
        else:
            left, right = m
        out.append(f"{left} {right}\n")
    return "".join(out).encode("utf-8")


def build_hf_tokenizer(meta_tok: Tokenizer):
    from transformers.convert_slow_tokenizer import TikTokenConverter

    specials = sorted(meta_tok.special_tokens.items(), key=lambda kv: kv[1])
    hf = TikTokenConverter(
        vocab_file=str(tokenizer_model_path()),
        pattern=Tokenizer.pat_str,
        extra_special_tokens=[name for name, _ in specials],
    ).converted()
    # The special tokens must land on the same ids as Meta's.
    for name, i in specials:
        assert hf.token_to_id(name) == i, (name, hf.token_to_id(name), i)
    return hf


def dump(obj: dict) -> str:
    """json.dumps with indentation, but every list of ints / [str, int] pair on one line."""
    placeholders: dict[str, str] = {}

    def compact(x):
        if isinstance(x, list) and all(isinstance(v, int) for v in x):
            key = f"@@LIST{len(placeholders)}@@"
            placeholders[key] = json.dumps(x, separators=(",", ":"))
            return key
        if isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], int):
            key = f"@@LIST{len(placeholders)}@@"
            placeholders[key] = json.dumps(x, ensure_ascii=False, separators=(", ", ": "))
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


def main() -> None:
    check_environment()
    tok = Tokenizer.get_instance()
    specials = sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    num_base = tok.model.n_vocab - len(specials)
    assert num_base == 128000 and len(specials) == 256
    assert [i for _, i in specials] == list(range(128000, 128256))

    hf = build_hf_tokenizer(tok)
    hf.encode_special_tokens = True
    hf_json = json.loads(hf.to_str())
    vocab = hf_json["model"]["vocab"]
    merges = hf_json["model"]["merges"]
    vocab_sha = hashlib.sha256(canonical_vocab_bytes(vocab, num_base)).hexdigest()
    merges_sha = hashlib.sha256(canonical_merges_bytes(merges)).hexdigest()

    cases = []
    hf_differs = []
    for name, text in build_cases():
        ids = tok.encode(text, bos=False, eos=False)
        assert tok.decode(ids) == text, f"{name}: decode(encode(text)) != text"
        assert all(0 <= i < num_base for i in ids), f"{name}: special id produced from plain text"
        hf_ids = hf.encode(text, add_special_tokens=False).ids
        if hf_ids != ids:
            hf_differs.append(name)
            print(
                f"HF differs from Meta on {name!r}: meta {len(ids)} ids, hf {len(hf_ids)} ids",
                file=sys.stderr,
            )
        cases.append({"name": name, "text": text, "ids": ids})

    long_run_cases = {"spaces_30000_then_x", "a_30000", "spaces_25000_then_x", "a_25001"}
    unexpected = [n for n in hf_differs if n not in long_run_cases]
    if unexpected:
        sys.exit(f"HF-converted tokenizer differs from Meta on short cases: {unexpected}")

    out = {
        "generator": "dev/tokenizer_fixtures.py",
        "llama_models_version": version("llama_models"),
        "tiktoken_version": tiktoken.__version__ if hasattr(tiktoken, "__version__") else version("tiktoken"),
        "transformers_version": version("transformers"),
        "tokenizers_version": version("tokenizers"),
        "tokenizer_model_sha256": TOKENIZER_MODEL_SHA256,
        "num_base_tokens": num_base,
        "special_tokens": [[name, i] for name, i in specials],
        "pattern": Tokenizer.pat_str,
        "hf_converter_vocab_sha256": vocab_sha,
        "hf_converter_merges_sha256": merges_sha,
        "hf_converter_num_merges": len(merges),
        "hf_canonical_forms": (
            "vocab: for ids 0..num_base_tokens-1 in id order, UTF-8 of f'{id}\\t{token_string}\\n' "
            "(token_string = GPT-2 byte-level string as in tokenizer.json), concatenated, sha256 hex; "
            "merges: in stored order, UTF-8 of f'{left} {right}\\n', concatenated, sha256 hex"
        ),
        "hf_differs_from_meta": hf_differs,
        "cases": cases,
    }
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text(dump(out), encoding="utf-8")
    print(
        f"wrote {OUT_PATH.relative_to(REPO_ROOT)}: {len(cases)} cases, {len(merges)} merges, "
        f"hf_differs_from_meta={hf_differs}"
    )


if __name__ == "__main__":
    main()
