//! The Jinja chat template and `tokenizer_config.json` herd writes beside an exported checkpoint,
//! so that `tokenizer.apply_chat_template(messages, add_generation_prompt=...)` in transformers or
//! vLLM renders a conversation exactly as [`crate::render::render_text`] does.
//!
//! The template (`chat_template.jinja`) takes herd's message JSON as transformers passes it
//! ([`crate::Message::to_json`], tool calls in the `{"type": "function"}` shape, the `tool` role) and writes
//! `<|begin_of_text|>`, the headers, the content untrimmed, `<|python_tag|>` plus the tool-call
//! text (custom calls through `tojson(ensure_ascii=true)`, which in transformers' template
//! environment is exactly Python's `json.dumps` default, as [`crate::python_json::dumps`]), and
//! `<|eot_id|>`/`<|eom_id|>`. It never adds a system preamble and refuses `tools=`.
//! `datasets/tests/fixtures/chat_template.json` (from `dev/chat_template_fixture.py`, transformers
//! 5.23) holds its rendering of every protocol fixture dialogue; the integration tests check those
//! texts against `render_text`.
//!
//! Known limits, measured by the fixture script (the text is identical in every case; these are
//! about the ids a tokenizer gives for that text):
//! - content holding special-token text (`<|eot_id|>` typed by a user) is split into special
//!   tokens by transformers, where herd keeps it plain text (`sanitize_control_tokens=True` keeps
//!   it text but cuts it into different pieces, so the ids still differ);
//! - content starting with a newline merges with the header's `\n\n` when the whole text is
//!   tokenized at once; herd tokenizes the two as separate pieces, as Meta's `ChatFormat` does;
//! - tool-call arguments given as a JSON string are written verbatim for custom tools (identical
//!   only when the string is already in `json.dumps` form) and refused for the builtin tools:
//!   Jinja cannot parse JSON.
//!
//! `apply_chat_template(..., tokenize=True)` tokenizes with `add_special_tokens=False`, so BOS
//! appears once; `tokenizer(text)` with the default `add_special_tokens=True` doubles it.

use serde_json::{Map, Value, json};

use crate::special_tokens::{BEGIN_OF_TEXT, EOT, FINETUNE_RIGHT_PAD, special_token_names};
use crate::tokenizer::Llama3Tokenizer;

/// herd's Llama 3.1 chat template (Jinja, as transformers runs it).
pub const LLAMA31_CHAT_TEMPLATE: &str = include_str!("chat_template.jinja");

/// The content of the `tokenizer_config.json` herd writes beside an exported `tokenizer.json`:
/// the layout of Meta's Llama 3.1 Instruct file (`added_tokens_decoder` for the special tokens,
/// `<|begin_of_text|>` as BOS, `<|eot_id|>` as EOS, `<|finetune_right_pad_id|>` as padding) with
/// [`LLAMA31_CHAT_TEMPLATE`]. The special-token ids are read from `tokenizer`, so a trained
/// tokenizer whose specials follow a smaller base vocabulary gets its own ids.
#[must_use]
pub fn tokenizer_config(tokenizer: &Llama3Tokenizer, model_max_length: usize) -> Value {
    let mut added_tokens = Map::new();
    for name in special_token_names() {
        if let Some(id) = tokenizer.token_to_id(&name) {
            added_tokens.insert(
                id.to_string(),
                json!({
                    "content": name,
                    "lstrip": false,
                    "normalized": false,
                    "rstrip": false,
                    "single_word": false,
                    "special": true,
                }),
            );
        }
    }
    json!({
        "added_tokens_decoder": added_tokens,
        "bos_token": BEGIN_OF_TEXT,
        "chat_template": LLAMA31_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": EOT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "pad_token": FINETUNE_RIGHT_PAD,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
}
