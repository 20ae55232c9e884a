//! The exported chat template renders like herd: `datasets/tests/fixtures/chat_template.json`
//! (`dev/chat_template_fixture.py`, transformers 5.23) holds what transformers'
//! `apply_chat_template` made of every protocol dialogue with `LLAMA31_CHAT_TEMPLATE`; each text
//! must equal `render_text`, so a change to herd's renderer that the template does not follow
//! fails here. The script itself checked the ids against Meta's (see the fixture's notes for the
//! cases where a text-based template cannot give herd's ids).

use std::fmt::Write as _;

use datasets::Dialogue;
use datasets::chat_template::{LLAMA31_CHAT_TEMPLATE, tokenizer_config};
use datasets::render::{Renderer, render_text};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::llama3::llama3_tokenizer;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/chat_template.json"))
        .expect("chat_template.json is JSON")
}

fn protocol_fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/llama3_protocol.json"))
        .expect("llama3_protocol.json is JSON")
}

fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no {key}", case["name"]))
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|id| u32::try_from(id.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

fn dialogue(case: &Value, messages: &Value) -> Dialogue {
    Dialogue::from_json(messages, "messages")
        .unwrap_or_else(|problems| panic!("{}: {problems:?}", case["name"]))
}

#[test]
fn fixture_was_generated_from_this_template() {
    let digest = Sha256::digest(LLAMA31_CHAT_TEMPLATE.as_bytes());
    let hex = digest.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    });
    assert_eq!(
        hex,
        text(&fixture(), "template_sha256"),
        "datasets/src/chat_template.jinja changed: run .venv-ref/bin/python dev/chat_template_fixture.py"
    );
}

#[test]
fn template_renders_every_protocol_dialogue_like_render_text() {
    let fixture = fixture();
    let protocol = protocol_fixture();
    let protocol_cases = protocol["cases"].as_array().unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    // Every protocol case but `empty_dialogue` (refused by herd and by transformers).
    assert_eq!(cases.len(), protocol_cases.len() - 1);
    for case in cases {
        let name = text(case, "name");
        let source = protocol_cases
            .iter()
            .find(|candidate| candidate["name"] == name)
            .unwrap_or_else(|| panic!("{name}: not in llama3_protocol.json"));
        let dialogue = dialogue(case, &source["messages"]);
        assert_eq!(
            render_text(&dialogue, false),
            text(case, "text"),
            "{name}: the chat template renders differently from herd"
        );
        assert_eq!(
            render_text(&dialogue, true),
            text(case, "text_generation_prompt"),
            "{name}: with a generation prompt, the chat template renders differently from herd"
        );
    }
    // Parity in ids, as the script measured it: identical except where a text-based template
    // cannot be (special-token text typed in content; content starting with a newline).
    let listed = |key: &str| -> Vec<String> {
        fixture[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap().to_owned())
            .collect()
    };
    let differing = listed("special_text_cases").len() + listed("header_merge_cases").len();
    assert_eq!(fixture["renderings"], 2 * cases.len());
    assert_eq!(fixture["identical_ids"], 2 * (cases.len() - differing));
    for case in cases {
        let name = text(case, "name").to_owned();
        let expected = !listed("special_text_cases").contains(&name)
            && !listed("header_merge_cases").contains(&name);
        assert_eq!(case["ids_identical"], expected, "{name}");
        assert_eq!(case["ids_identical_generation_prompt"], expected, "{name}");
    }
}

#[test]
fn template_renders_other_message_shapes_like_herd() {
    let tokenizer = llama3_tokenizer();
    let renderer = Renderer::new(tokenizer).unwrap();
    let fixture = fixture();
    let cases = fixture["extra_cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let name = text(case, "name");
        let dialogue = dialogue(case, &case["messages"]);
        assert_eq!(render_text(&dialogue, false), text(case, "text"), "{name}");
        assert_eq!(
            renderer.render(&dialogue, false).unwrap().ids,
            ids(&case["ids"]),
            "{name}: transformers' ids for the template's text differ from herd's"
        );
        assert_eq!(
            renderer.render(&dialogue, true).unwrap().ids,
            ids(&case["generation_prompt_ids"]),
            "{name}: generation prompt"
        );
    }
}

#[test]
fn known_limits_are_as_recorded() {
    let fixture = fixture();
    let limits = fixture["limits"].as_array().unwrap();
    let limit = |name: &str| -> &Value {
        limits
            .iter()
            .find(|case| case["name"] == name)
            .unwrap_or_else(|| panic!("no limit {name}"))
    };
    // A JSON-string arguments value is written verbatim; herd re-serializes it.
    let verbatim = limit("custom_arguments_string_not_in_json_dumps_form");
    let herd = render_text(&dialogue(verbatim, &verbatim["messages"]), false);
    let template = text(verbatim, "text");
    assert_ne!(herd, template);
    assert!(
        herd.contains(r#""parameters": {"a": 1, "b": "\u00e9"}}"#),
        "{herd}"
    );
    assert!(
        template.contains(r#""parameters": {"a":1,"b":"é"}}"#),
        "{template}"
    );
    // Refused by the template: builtin arguments as a string (herd renders them), tools=
    // (herd has no tools renderer), two tool calls (herd refuses them too).
    for name in [
        "builtin_arguments_as_string",
        "tools_argument",
        "two_tool_calls",
    ] {
        let case = limit(name);
        assert!(case["text"].is_null(), "{name}");
        assert!(!text(case, "error").is_empty(), "{name}");
    }
    assert!(
        Dialogue::from_json(&limit("two_tool_calls")["messages"], "messages").is_err(),
        "herd refuses two tool calls in one message"
    );
}

#[test]
fn tokenizer_config_is_the_one_transformers_loaded() {
    let fixture = fixture();
    let mut config = tokenizer_config(llama3_tokenizer(), 131_072);
    assert_eq!(config["chat_template"], LLAMA31_CHAT_TEMPLATE);
    assert_eq!(
        config["added_tokens_decoder"].as_object().unwrap().len(),
        256
    );
    assert_eq!(
        config["added_tokens_decoder"]["128004"]["content"],
        "<|finetune_right_pad_id|>"
    );
    // The fixture stores the template by its sha256 only.
    config["chat_template"] = Value::from("@@TEMPLATE@@");
    assert_eq!(config, fixture["tokenizer_config"]);
}
