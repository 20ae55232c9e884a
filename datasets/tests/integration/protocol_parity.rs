//! Token-for-token parity with Meta's reference (`llama-models` 0.3.0 `ChatFormat`), read from the
//! fixture `dev/protocol_fixtures.py` generated. herd follows the prompt-format document where it
//! and the encoder disagree (the fixture inserts `<|python_tag|>` before every tool call and marks
//! those cases with `deviation`).

use datasets::decode::{StopReason, decode_assistant};
use datasets::preamble::{ListedTool, SystemPreamble};
use datasets::render::{Renderer, render_text};
use datasets::{Dialogue, Role};
use serde_json::Value;

use crate::llama3::llama3_tokenizer;

fn fixture() -> Value {
    let text = include_str!("../fixtures/llama3_protocol.json");
    serde_json::from_str(text).expect("fixture is JSON")
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|id| u32::try_from(id.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

#[test]
fn every_dialogue_renders_exactly_like_meta() {
    let tokenizer = llama3_tokenizer();
    let renderer = Renderer::new(tokenizer).unwrap();
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 25, "fixture has {} cases", cases.len());
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dialogue = match Dialogue::from_json(&case["messages"], "messages") {
            Ok(dialogue) => dialogue,
            Err(problems) => {
                // Meta renders an empty dialogue as BOS + header; herd refuses it as data.
                assert_eq!(name, "empty_dialogue", "{name}: {problems:?}");
                continue;
            }
        };
        let rendered = renderer.render(&dialogue, false).unwrap();
        assert_eq!(
            rendered.ids,
            ids(&case["ids"]),
            "{name}: ids differ from llama-models"
        );
        assert_eq!(rendered.tags.len(), rendered.ids.len(), "{name}");
        let prompt = renderer.render(&dialogue, true).unwrap();
        assert_eq!(
            prompt.ids,
            ids(&case["generation_prompt_ids"]),
            "{name}: generation prompt ids differ"
        );
        assert_eq!(
            tokenizer.decode(&prompt.ids).unwrap(),
            render_text(&dialogue, true),
            "{name}: text rendering differs from the decoded ids"
        );
        checked += 1;
    }
    assert!(checked >= 25);
}

#[test]
fn every_fixture_assistant_message_decodes_back() {
    let tokenizer = llama3_tokenizer();
    let renderer = Renderer::new(tokenizer).unwrap();
    let fixture = fixture();
    let mut decoded = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let Ok(dialogue) = Dialogue::from_json(&case["messages"], "messages") else {
            continue;
        };
        for message in dialogue
            .messages()
            .iter()
            .filter(|message| message.role == Role::Assistant)
        {
            let mut expected = message.clone();
            if let Some(call) = &mut expected.tool_call {
                call.id = None;
            }
            let body = renderer.render_assistant_body(message).unwrap();
            let result = decode_assistant(tokenizer, &body).unwrap();
            assert_eq!(result.message, expected, "{}", case["name"]);
            assert_eq!(result.consumed, body.len());
            assert_ne!(result.stop, StopReason::OutOfTokens);
            decoded += 1;
        }
    }
    assert!(
        decoded >= 20,
        "only {decoded} assistant messages in the fixture"
    );
}

#[test]
fn system_preambles_match_the_prompt_format_document() {
    let fixture = fixture();
    let preambles = fixture["preambles"].as_array().unwrap();
    assert!(preambles.len() >= 5);
    for case in preambles {
        let builder = &case["builder"];
        let text = |key: &str| builder[key].as_str().map(str::to_owned);
        let preamble = SystemPreamble {
            environment_ipython: builder["environment_ipython"].as_bool().unwrap(),
            tools: builder["builtin_tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|tool| match tool.as_str().unwrap() {
                    "brave_search" => ListedTool::BraveSearch,
                    "wolfram_alpha" => ListedTool::WolframAlpha,
                    other => panic!("unknown listed tool {other}"),
                })
                .collect(),
            cutting_knowledge_date: text("cutting_knowledge_date"),
            today_date: text("today_date"),
            instructions: text("instructions"),
        };
        assert_eq!(
            preamble.text(),
            case["text"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}
